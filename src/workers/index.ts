import { Worker, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../lib/logger';
import { settlesWithin } from '../lib/time';
import type { OperationLedger } from '../operations/ledger';
import { settleFailedJob } from '../operations/relay';
import type { OperationRepository } from '../db';
import type { OperationQueueName, Processors } from '../processors';
import { SHUTDOWN_ABORT_REASON } from '../processors/run-operation';
import { OPERATION_QUEUES, type JobPayloads } from '../queues/queues';

/** True when BullMQ will not try this job again. */
export function isFinalFailure(job: Job, err: Error | undefined): boolean {
  if (job.finishedOn) return true;
  if (err?.name === 'UnrecoverableError') return true;
  return job.attemptsMade >= (job.opts.attempts ?? 1);
}

export interface WorkerSettings {
  /**
   * How long a job stays owned by a worker that stopped renewing its lock (crashed, or shut down
   * past its drain deadline) before another worker takes it over. Renewal is automatic every half
   * lock while the process lives, so slow cloud calls never hit this; it only bounds how soon a
   * crashed worker's jobs resume, and it must outlast an event-loop stall to avoid double runs.
   */
  lockDurationMs: number;
  /** How often each worker looks for jobs whose lock expired. */
  stalledIntervalMs: number;
  /** Stalls tolerated before BullMQ fails a job (a job that keeps killing its worker). */
  maxStalledCount: number;
}

export const DEFAULT_WORKER_SETTINGS: WorkerSettings = {
  lockDurationMs: 60_000,
  stalledIntervalMs: 30_000,
  maxStalledCount: 2,
};

/**
 * A BullMQ worker for one queue, that starts taking jobs when run() is called, with the lock
 * settings above and its errors logged.
 */
export function createQueueWorker<D>(
  name: string,
  processor: Processor<D>,
  deps: { connection: Redis; prefix: string; concurrency: number; settings?: Partial<WorkerSettings>; logger: Logger },
): Worker<D> {
  const settings = { ...DEFAULT_WORKER_SETTINGS, ...deps.settings };
  const worker = new Worker<D>(name, processor, {
    connection: deps.connection,
    prefix: deps.prefix,
    concurrency: deps.concurrency,
    autorun: false,
    lockDuration: settings.lockDurationMs,
    stalledInterval: settings.stalledIntervalMs,
    maxStalledCount: settings.maxStalledCount,
  });
  worker.on('error', (err) => deps.logger.error({ err, queue: name }, 'Worker error'));
  return worker;
}

export interface WorkersDeps {
  /** A connection with maxRetriesPerRequest null (createWorkerConnection); shared, not closed here. */
  connection: Redis;
  prefix: string;
  concurrency: number;
  processors: Processors;
  ledger: Pick<OperationLedger, 'settleQueueFailure'>;
  /** Reads the operation of a job BullMQ failed, before deciding its fate. */
  operations: Pick<OperationRepository, 'findById'>;
  /** Failures the processors recorded themselves (shared with them); the rest are settled here. */
  handledFailures: Set<string>;
  logger: Logger;
  settings?: Partial<WorkerSettings>;
  /** Only these queues get a worker (default: every operation queue). */
  queues?: readonly OperationQueueName[];
}

export type OperationWorkers = { [K in OperationQueueName]?: Worker<JobPayloads[K]> };

export interface WorkerPool {
  workers: OperationWorkers;
  /** Starts fetching jobs. */
  run(): void;
  /**
   * Stops taking jobs and lets in-flight ones finish, for at most `drainTimeoutMs`. Jobs still
   * running then are cut off: each goes back to the queue at once (no attempt, no stall counted)
   * for another worker to take over.
   */
  close(drainTimeoutMs: number): Promise<{ drained: boolean }>;
}

// After abandoning jobs, the processors need a moment to record the interruption and hand back.
const ABANDON_GRACE_MS = 5_000;

export function createWorkers(deps: WorkersDeps): WorkerPool {
  const settings = { ...DEFAULT_WORKER_SETTINGS, ...deps.settings };
  const logger = deps.logger.child({ component: 'workers' });
  const pending = new Set<Promise<unknown>>();
  const workers: OperationWorkers = {};
  const names = deps.queues ?? OPERATION_QUEUES;

  for (const name of names) {
    const worker = createQueueWorker(name, deps.processors[name] as never, { ...deps, settings, logger });
    worker.on('stalled', (jobId) =>
      logger.warn({ queue: name, jobId }, 'Job stalled (its worker stopped renewing the lock); it is queued again'),
    );
    worker.on('failed', (job, err) => {
      if (!job) return;
      // The processor recorded this failure (or refused the job without touching anything).
      if (deps.handledFailures.delete(String(job.id)) || !isFinalFailure(job, err)) return;
      // BullMQ failed the job without the processor: it stalled too often (its workers died), or
      // it was failed by hand. A stall is our own outage, so the job runs again (bounded, in case it
      // is the job that kills its workers); anything else fails the operation, and the ledger runs
      // the final-failure hook. Otherwise the operation would look live forever.
      const operationId = (job.data as { operationId?: unknown })?.operationId;
      if (typeof operationId !== 'string') return;
      const error = err?.message || job.failedReason || 'job failed';
      const log = logger.child({ queue: name, jobId: job.id, operationId });
      const settle = async () => {
        // The operation first, then the job: a job still in the failed set after that read means the
        // view belongs to the delivery that failed, not to one that claimed the operation since.
        const seen = await deps.operations.findById(operationId);
        if (!seen || (await job.getState()) !== 'failed') return;
        const outcome = await settleFailedJob(deps.ledger, seen, job, error, log);
        if (outcome === 'requeue') log.warn({ error }, 'Job stalled too often (its workers died); delivered again');
      };
      const p = settle().catch((e: unknown) =>
        logger.error({ err: e, queue: name, jobId: job.id }, 'Could not settle the operation of a failed job; the relay will'),
      );
      pending.add(p);
      void p.finally(() => pending.delete(p));
    });
    (workers as Record<string, Worker>)[name] = worker as Worker;
  }

  const all = () => Object.values(workers) as Worker[];

  return {
    workers,
    run() {
      for (const w of all()) {
        w.run().catch((err: unknown) => logger.error({ err, queue: w.name }, 'Worker stopped with an error'));
      }
      logger.info({ queues: names, concurrency: deps.concurrency }, 'Workers started');
    },
    async close(drainTimeoutMs) {
      const closing = Promise.all(all().map((w) => w.close()));
      const drained = await settlesWithin(closing, drainTimeoutMs);
      if (!drained) {
        logger.warn(
          { drainTimeoutMs },
          'Drain deadline passed; leaving unfinished jobs to be picked up again by another worker',
        );
        for (const w of all()) w.cancelAllJobs(SHUTDOWN_ABORT_REASON);
        if (!(await settlesWithin(closing, ABANDON_GRACE_MS))) logger.error('Workers did not hand back their jobs in time');
      }
      await Promise.allSettled([...pending]);
      return { drained };
    },
  };
}
