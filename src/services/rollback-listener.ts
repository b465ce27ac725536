import type { Job, Queue, Worker } from 'bullmq';
import type { DataSource } from 'typeorm';
import { RecordNotFoundError, TransitionConflictError, inTransaction, transition } from '../db';
import type { Logger } from '../lib/logger';
import type { ProvisionJobData } from '../queues/queues';

/**
 * A provision that failed for good must be rolled back, or its server keeps running (and billing)
 * and its tailnet device stays. Two paths lead there, both ending in the exactly-once
 * `requestRollback` (Operation under a fixed idempotency key, queue job under a fixed job id):
 *
 * - the listener: the provision worker's `failed` event. It fires in the process whose worker ran
 *   the failed attempt — once, in one process — so API-only processes need nothing, and N worker
 *   processes do not race each other for every failure. (QueueEvents would fire in every listening
 *   process and needs a blocking connection each; it buys nothing the sweep does not cover.)
 * - the sweep, at start-up and every ROLLBACK_SWEEP_INTERVAL_SECONDS in each worker process: a
 *   database query for failed provisions without a rollback. It covers whatever the listener
 *   missed — a crash between BullMQ marking the job failed and the rollback request, a failure
 *   while no worker with a listener ran, a Redis hiccup. A timer per process (rather than a BullMQ
 *   job scheduler) needs no extra queue, and overlapping sweeps of several processes are harmless
 *   because the request is exactly-once; the query is indexed and small.
 */

export interface RollbackRequester {
  requestRollback(
    provisioningJobId: string,
    opts?: { idempotencyKey?: string; trigger?: 'api' | 'auto' | 'sweep' },
  ): Promise<{ operation: { id: string }; created: boolean }>;
}

export interface RollbackListenerDeps {
  dataSource: DataSource;
  operations: RollbackRequester;
  /** Used by the sweep to read the BullMQ state of provision jobs the database still calls live. */
  provisionQueue: Pick<Queue<ProvisionJobData>, 'getJobState'>;
  logger: Logger;
  sweepIntervalMs: number;
  /** Sweep once at start(); default true. */
  sweepOnStart?: boolean;
}

export interface SweepResult {
  /** Provisioning jobs for which a rollback was requested by this sweep (new or already there). */
  requested: string[];
  /** Of those, the ones whose rollback Operation this sweep created. */
  created: string[];
}

/**
 * Marks a provisioning job (and its provision Operation, if still live) failed: a guarded update
 * with its audit event, a no-op when someone got there first. Used by the provision processor on
 * the last attempt, by the listener, and by the sweep.
 */
export async function recordProvisionFailure(
  dataSource: DataSource,
  input: { provisioningJobId: string; operationId?: string | null; error: string; failedStep?: string | null },
): Promise<boolean> {
  return inTransaction(dataSource, async (m) => {
    const finishedAt = new Date();
    if (input.operationId) {
      await ignoreConflict(
        transition(m, {
          entity: 'operation',
          id: input.operationId,
          from: ['queued', 'running'],
          to: 'failed',
          reason: `provision failed for good: ${input.error}`,
          operationId: input.operationId,
          patch: { error: input.error, finishedAt, ...(input.failedStep ? { failedStep: input.failedStep } : {}) },
        }),
      );
    }
    const moved = await ignoreConflict(
      transition(m, {
        entity: 'provisioning_job',
        id: input.provisioningJobId,
        from: ['queued', 'running'],
        to: 'failed',
        reason: `provision failed for good${input.failedStep ? ` at ${input.failedStep}` : ''}: ${input.error}`,
        operationId: input.operationId ?? null,
        // The lifecycle service already recorded the step it failed at; keep it unless we know better.
        patch: { error: input.error, finishedAt, ...(input.failedStep ? { failedStep: input.failedStep } : {}) },
      }),
    );
    return moved !== undefined;
  });
}

/** Someone else moved the row first (or it is gone): nothing for us to do. */
async function ignoreConflict<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof TransitionConflictError || err instanceof RecordNotFoundError) return undefined;
    throw err;
  }
}

/** True when BullMQ will not try this job again. */
export function isFinalFailure(job: Job, err: Error | undefined): boolean {
  if (job.finishedOn) return true;
  if (err?.name === 'UnrecoverableError') return true;
  return job.attemptsMade >= (job.opts.attempts ?? 1);
}

const UNKNOWN_JOB_GRACE_SECONDS = 300;

export class RollbackListener {
  private readonly inFlight = new Set<Promise<unknown>>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<SweepResult> | undefined;
  private closed = false;

  constructor(private readonly deps: RollbackListenerDeps) {}

  /** Listens to the provision worker of this process. */
  attach(worker: Worker<ProvisionJobData>): void {
    worker.on('failed', (job, err) => {
      if (!job || this.closed || !isFinalFailure(job, err)) return;
      this.track(this.onProvisionFailed(job, err));
    });
  }

  /** Start-up sweep, then one every interval (with jitter, so several processes spread out). */
  start(): void {
    if (this.deps.sweepOnStart !== false) this.track(this.sweepSafely('start-up'));
    const schedule = () => {
      const jitter = Math.floor(Math.random() * Math.min(5000, this.deps.sweepIntervalMs / 10));
      this.timer = setTimeout(() => {
        if (this.closed) return;
        this.track(this.sweepSafely('schedule').finally(() => !this.closed && schedule()));
      }, this.deps.sweepIntervalMs + jitter);
      this.timer.unref();
    };
    schedule();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  async onProvisionFailed(job: Job<ProvisionJobData>, err: Error | undefined): Promise<void> {
    const { provisioningJobId, operationId } = job.data;
    const logger = this.deps.logger.child({ provisioningJobId, operationId, jobId: job.id });
    try {
      // Normally the processor already recorded this; a job failed by BullMQ itself (stalled too
      // often) never reached the processor, so make sure here.
      await recordProvisionFailure(this.deps.dataSource, {
        provisioningJobId,
        operationId,
        error: err?.message || job.failedReason || 'provision failed',
      });
      const { operation, created } = await this.deps.operations.requestRollback(provisioningJobId, { trigger: 'auto' });
      logger.info({ rollbackOperationId: operation.id, created }, 'Provision failed for good; rollback requested');
    } catch (e) {
      logger.error({ err: e }, 'Could not request the rollback of a failed provision; the sweep will try again');
    }
  }

  /**
   * Failed provisions without a rollback: provisioning jobs marked failed, provision Operations
   * failed while their provisioning job still looks live, and live-looking provision Operations
   * whose BullMQ job has already failed (a crash or a BullMQ-side failure between the two writes).
   */
  async sweep(): Promise<SweepResult> {
    if (this.sweeping) return this.sweeping;
    this.sweeping = this.runSweep().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async runSweep(): Promise<SweepResult> {
    const ds = this.deps.dataSource;
    const result: SweepResult = { requested: [], created: [] };

    // Live-looking provision Operations whose queue job BullMQ has given up on.
    const live: { id: string; provisioning_job_id: string; queue_job_id: string; age_s: number }[] = await ds.query(
      `SELECT o.id, o.provisioning_job_id, o.queue_job_id,
              extract(epoch FROM now() - o.requested_at)::float8 AS age_s
         FROM operations o
         JOIN provisioning_jobs pj ON pj.id = o.provisioning_job_id
        WHERE o.type = 'provision' AND o.status IN ('queued', 'running')
          AND pj.status IN ('queued', 'running')
          AND o.queue_job_id IS NOT NULL
        LIMIT 500`,
    );
    for (const op of live) {
      const state = await this.deps.provisionQueue.getJobState(op.queue_job_id);
      // 'unknown' = not in Redis: removed by retention or a flushed Redis, so nothing will run it.
      // A young Operation may simply not be enqueued yet (the row is written before the add).
      const gone = state === 'unknown' && op.age_s > UNKNOWN_JOB_GRACE_SECONDS;
      if (state === 'failed' || gone) {
        await recordProvisionFailure(ds, {
          provisioningJobId: op.provisioning_job_id,
          operationId: op.id,
          error: state === 'failed' ? 'Provision job failed in the queue' : 'Provision job is gone from the queue',
        });
      }
    }

    // Provision Operations failed while the provisioning job was left live (crash between writes).
    const halfRecorded: { id: string; provisioning_job_id: string; error: string | null; failed_step: string | null }[] =
      await ds.query(
        `SELECT o.id, o.provisioning_job_id, o.error, o.failed_step
           FROM operations o
           JOIN provisioning_jobs pj ON pj.id = o.provisioning_job_id
          WHERE o.type = 'provision' AND o.status = 'failed' AND pj.status IN ('queued', 'running')
          LIMIT 500`,
      );
    for (const op of halfRecorded) {
      await recordProvisionFailure(ds, {
        provisioningJobId: op.provisioning_job_id,
        error: op.error ?? 'provision failed',
        failedStep: op.failed_step,
      });
    }

    const orphans: { id: string }[] = await ds.query(
      `SELECT pj.id
         FROM provisioning_jobs pj
        WHERE pj.status = 'failed'
          -- The key, not just any rollback row: a rollback whose enqueue failed releases its key so
          -- that it can be requested again.
          AND NOT EXISTS (SELECT 1 FROM operations r WHERE r.idempotency_key = 'rollback:' || pj.id::text)
        ORDER BY pj.updated_at
        LIMIT 500`,
    );
    for (const { id } of orphans) {
      try {
        const { operation, created } = await this.deps.operations.requestRollback(id, { trigger: 'sweep' });
        result.requested.push(id);
        if (created) result.created.push(id);
        this.deps.logger.warn(
          { provisioningJobId: id, rollbackOperationId: operation.id, created },
          'Sweep found a failed provision without a rollback; rollback requested',
        );
      } catch (err) {
        this.deps.logger.error({ err, provisioningJobId: id }, 'Sweep could not request a rollback');
      }
    }
    return result;
  }

  private async sweepSafely(reason: string): Promise<SweepResult | undefined> {
    try {
      const r = await this.sweep();
      this.deps.logger.debug({ reason, ...r }, 'Rollback sweep done');
      return r;
    } catch (err) {
      this.deps.logger.error({ err, reason }, 'Rollback sweep failed');
      return undefined;
    }
  }

  private track<T>(p: Promise<T>): void {
    const tracked = p.catch(() => undefined);
    this.inFlight.add(tracked);
    void tracked.finally(() => this.inFlight.delete(tracked));
  }
}
