import { ConfigError, loadConfig, type Config } from './config';
import { createLogger } from './lib/logger';
import { createTailfleet, type TailfleetOverrides } from './server';

/**
 * A tailfleet process: the environment's config (a bad one exits 1 with its message), the service
 * started, and SIGTERM/SIGINT running the ordered shutdown (HTTP → workers drain → queues → Redis →
 * database); a second signal exits at once. The entry point of `npm start` (src/main.ts), and of
 * the processes the chaos suite starts and kills.
 */
const DUPLICATE_SIGNAL_MS = 1000;
/**
 * Beyond the drain deadline the shutdown may still spend a few seconds on slow HTTP clients, jobs
 * handing back after the deadline and closing connections. Past this much more it is stuck (a
 * connection that never closes): exit anyway, so the orchestrator does not have to SIGKILL us.
 * Deployments give the process DRAIN_TIMEOUT_SECONDS + this margin (compose: stop_grace_period).
 */
const SHUTDOWN_MARGIN_MS = 15_000;

export interface RunOptions {
  /** The logger's name (default: the logger's own, tailfleet). */
  loggerName?: string;
  /** What to set beside the config (the logger is the one made here). */
  overrides?: Omit<TailfleetOverrides, 'logger'>;
  /** Called once the service has started. */
  onStarted?: () => void;
}

export async function runTailfleet(o: RunOptions = {}): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }

  const logger = createLogger({ level: config.logLevel, ...(o.loggerName ? { name: o.loggerName } : {}) });
  const tailfleet = createTailfleet(config, { ...o.overrides, logger });

  let signalledAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalledAt) {
      // One Ctrl-C can arrive more than once (the terminal signals the whole process group and
      // npm/tsx relay it too); only a later, deliberate second signal skips the drain.
      if (Date.now() - signalledAt < DUPLICATE_SIGNAL_MS) return;
      logger.warn({ signal }, 'Second signal: exiting without waiting for jobs to finish');
      process.exit(130);
    }
    signalledAt = Date.now();
    logger.info({ signal, drainTimeoutSeconds: config.queues.drainTimeoutSeconds }, `${signal} received, shutting down`);
    const watchdog = setTimeout(() => {
      logger.error({ signal }, 'Shutdown did not finish in time; exiting without it');
      process.exit(1);
    }, config.queues.drainTimeoutSeconds * 1000 + SHUTDOWN_MARGIN_MS);
    watchdog.unref();
    tailfleet.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'Shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  try {
    await tailfleet.start();
  } catch (err) {
    logger.fatal({ err }, 'tailfleet failed to start');
    await tailfleet.stop().catch(() => undefined);
    process.exit(1);
  }
  o.onStarted?.();
}
