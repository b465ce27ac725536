import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { RecordNotFoundError, TransitionConflictError, transition } from '../db';
import type { Logger } from '../lib/logger';
import type { OperationQueueName, Processors } from '../processors';
import { SHUTDOWN_ABORT_REASON } from '../processors/run-operation';
import { OPERATION_QUEUES, type JobPayloads } from '../queues/queues';
import { isFinalFailure } from '../services/rollback-listener';

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

export interface WorkersDeps {
  /** A connection with maxRetriesPerRequest null (createWorkerConnection); shared, not closed here. */
  connection: Redis;
  prefix: string;
  concurrency: number;
  processors: Processors;
  dataSource: DataSource;
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
   * running then are abandoned in place: they stay active in Redis and, once their lock expires,
   * the stalled-job check of another worker puts them back in the queue.
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
    const worker = new Worker(name, deps.processors[name] as never, {
      connection: deps.connection,
      prefix: deps.prefix,
      concurrency: deps.concurrency,
      autorun: false,
      lockDuration: settings.lockDurationMs,
      stalledInterval: settings.stalledIntervalMs,
      maxStalledCount: settings.maxStalledCount,
    });
    worker.on('error', (err) => logger.error({ err, queue: name }, 'Worker error'));
    worker.on('stalled', (jobId) =>
      logger.warn({ queue: name, jobId }, 'Job stalled (its worker stopped renewing the lock); it is queued again'),
    );
    worker.on('failed', (job, err) => {
      if (!job || !isFinalFailure(job, err)) return;
      const p = settleOperation(deps.dataSource, job as Job<{ operationId: string }>, err).catch((e: unknown) =>
        logger.error({ err: e, queue: name, jobId: job.id }, 'Could not mark the operation of a failed job'),
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
      const drained = await within(closing, drainTimeoutMs);
      if (!drained) {
        logger.warn(
          { drainTimeoutMs },
          'Drain deadline passed; leaving unfinished jobs to be picked up again by another worker',
        );
        for (const w of all()) w.cancelAllJobs(SHUTDOWN_ABORT_REASON);
        if (!(await within(closing, ABANDON_GRACE_MS))) logger.error('Workers did not hand back their jobs in time');
      }
      await Promise.allSettled([...pending]);
      return { drained };
    },
  };
}

/**
 * BullMQ can fail a job without calling the processor (stalled more than maxStalledCount times),
 * which would leave its Operation looking live forever.
 */
async function settleOperation(ds: DataSource, job: Job<{ operationId: string }>, err: Error | undefined) {
  const operationId = job.data?.operationId;
  if (!operationId) return;
  const error = err?.message || job.failedReason || 'job failed';
  try {
    await transition(ds, {
      entity: 'operation',
      id: operationId,
      from: ['queued', 'running'],
      to: 'failed',
      reason: `job failed in the queue: ${error}`,
      operationId,
      patch: { error, finishedAt: new Date() },
    });
  } catch (e) {
    // The processor already recorded the outcome (the usual case).
    if (!(e instanceof TransitionConflictError || e instanceof RecordNotFoundError)) throw e;
  }
}

async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
