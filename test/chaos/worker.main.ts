import 'reflect-metadata';
import { runTailfleet } from '../../src/run';

/**
 * A worker process for the chaos suite: `npm start` with the environment's config (ROLE=worker),
 * but with BullMQ lock timings in seconds instead of a minute. After a SIGKILL the jobs the process
 * held are only picked up again once their lock expires; with the production lock (60 s) two kills
 * would spend minutes waiting instead of exercising recovery. Client retry delays are shortened the
 * same way the pipeline tests do.
 */
const fast = { retryBaseDelayMs: 20, retryMaxDelayMs: 250, maxRateLimitWaitMs: 2_000, requestTimeoutMs: 5_000 };

void runTailfleet({
  loggerName: `chaos-worker-${process.env.CHAOS_WORKER_NAME ?? process.pid}`,
  overrides: { hetzner: fast, tailscale: fast, worker: { lockDurationMs: 3_000, stalledIntervalMs: 1_000 } },
  // The parent waits for this line (a readiness poll on the child's output, not a sleep). On
  // stderr: stdout carries the JSON log, whose long lines are written in pieces that a line of
  // our own could land between.
  onStarted: () => process.stderr.write(`chaos-worker-ready pid=${process.pid}\n`),
});
