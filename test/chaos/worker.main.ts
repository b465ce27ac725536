import 'reflect-metadata';
import { ConfigError, loadConfig } from '../../src/config';
import { createLogger } from '../../src/lib/logger';
import { createTailfleet } from '../../src/server';

/**
 * A worker process for the chaos suite: the composition root with the environment's config, like
 * `npm start` with ROLE=worker, but with BullMQ lock timings in seconds instead of a minute. After a
 * SIGKILL the jobs the process held are only picked up again once their lock expires; with the
 * production lock (60 s) two kills would spend minutes waiting instead of exercising recovery.
 * Client retry delays are shortened the same way the pipeline tests do.
 */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger({ level: config.logLevel, name: `chaos-worker-${process.env.CHAOS_WORKER_NAME ?? process.pid}` });
  const fast = { retryBaseDelayMs: 20, retryMaxDelayMs: 250, maxRateLimitWaitMs: 2_000, requestTimeoutMs: 5_000 };
  const tf = createTailfleet(config, {
    logger,
    hetzner: fast,
    tailscale: fast,
    worker: { lockDurationMs: 3_000, stalledIntervalMs: 1_000 },
  });
  process.on('SIGTERM', () => {
    tf.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
  try {
    await tf.start();
    // The parent waits for this line (a readiness poll on the child's output, not a sleep). On
    // stderr: stdout carries the JSON log, whose long lines are written in pieces that a line of
    // our own could land between.
    process.stderr.write(`chaos-worker-ready pid=${process.pid}\n`);
  } catch (err) {
    logger.fatal({ err }, 'chaos worker failed to start');
    await tf.stop().catch(() => undefined);
    process.exit(1);
  }
}

void main();
