import type { DataSource } from 'typeorm';
import { tryTransition } from '../db';
import type { Logger } from '../lib/logger';
import type { FinalFailureHook } from './ledger';
import type { ProvisioningJobRepository } from '../db/provisioning-job.repository';

const HALF_RECORDED_GRACE_SECONDS = 120;

/**
 * A provision that failed for good must be rolled back, or its server keeps running (and billing)
 * and its tailnet device stays. Two paths lead there, both ending in the exactly-once
 * `requestRollback` (Operation under a fixed idempotency key, queue job under a fixed job id):
 *
 * - the ledger's final-failure hook (`provisionFailureHook`): runs once the ledger has recorded a
 *   provision's final failure — by the delivery that owns it, so a duplicate delivery that lost the
 *   race never rolls back a provision that is about to succeed — or BullMQ's own failure of the job.
 * - the sweep, at start-up and every ROLLBACK_SWEEP_INTERVAL_SECONDS in each worker process: a
 *   database query for failed provisions without a rollback. It covers whatever the hook missed — a
 *   crash between the two writes, a failure while no worker ran. Overlapping sweeps of several
 *   processes are harmless because the request is exactly-once; the query is indexed and small.
 *
 * A provision whose queue job Redis lost is not a failure: the outbox relay delivers it again.
 */

export interface RollbackRequester {
  requestRollback(
    provisioningJobId: string,
    opts?: { trigger?: 'api' | 'auto' | 'sweep' },
  ): Promise<{ operation: { id: string }; created: boolean }>;
}

export interface RollbackListenerDeps {
  dataSource: DataSource;
  operations: RollbackRequester;
  provisioningJobs: Pick<ProvisioningJobRepository, 'listLiveWithFailedProvision' | 'listFailedWithoutRollback'>;
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
 * Marks a provisioning job failed: a guarded update with its audit event, a no-op when someone got
 * there first. The provision operation's own failure is the ledger's; this is the job's.
 */
export async function recordProvisionFailure(
  dataSource: DataSource,
  input: { provisioningJobId: string; operationId?: string | null; error: string; failedStep?: string | null },
): Promise<boolean> {
  const moved = await tryTransition(dataSource, {
    entity: 'provisioning_job',
    id: input.provisioningJobId,
    from: ['queued', 'running'],
    to: 'failed',
    reason: `provision failed for good${input.failedStep ? ` at ${input.failedStep}` : ''}: ${input.error}`,
    operationId: input.operationId ?? null,
    // The workflow already recorded the step it failed at; keep it unless we know better.
    patch: { error: input.error, finishedAt: new Date(), ...(input.failedStep ? { failedStep: input.failedStep } : {}) },
  });
  return moved !== null;
}

/**
 * The ledger's final-failure hook: a provision that failed for good has its provisioning job marked
 * failed and its rollback requested. Other operation types need nothing more.
 */
export function provisionFailureHook(deps: { dataSource: DataSource; operations: RollbackRequester; rollback?: boolean }): FinalFailureHook {
  return async ({ operation, failedStep, error, cause, logger }) => {
    if (operation.type !== 'provision' || !operation.provisioningJobId) return;
    if ((cause as { lostRace?: unknown } | undefined)?.lostRace === true) {
      // Another writer moved this provision's rows while the attempt ran: a parallel delivery that
      // may be about to succeed, or a destroy already cleaning up. A rollback now would race it; if
      // nobody finishes, the sweep rolls the provision back once it has stayed failed a while.
      logger.warn({ provisioningJobId: operation.provisioningJobId }, 'Provision attempt lost a race; no rollback from this delivery');
      return;
    }
    await recordProvisionFailure(deps.dataSource, {
      provisioningJobId: operation.provisioningJobId,
      operationId: operation.id,
      error,
      failedStep,
    });
    if (deps.rollback === false) return;
    const { operation: rollback, created } = await deps.operations.requestRollback(operation.provisioningJobId, { trigger: 'auto' });
    logger.info({ rollbackOperationId: rollback.id, created, provisioningJobId: operation.provisioningJobId }, 'Provision failed for good; rollback requested');
  };
}

export class RollbackListener {
  private readonly inFlight = new Set<Promise<unknown>>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<SweepResult> | undefined;
  private closed = false;

  constructor(private readonly deps: RollbackListenerDeps) {}

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

  /**
   * Failed provisions without a rollback: provisioning jobs marked failed, and provision Operations
   * failed while their provisioning job still looks live (a crash between the two writes). A running
   * provision whose BullMQ job failed without the processor recording it is the relay's: it fails
   * the operation through the ledger (or delivers a stalled job again), and the hook runs from there.
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
    const jobs = this.deps.provisioningJobs;
    const result: SweepResult = { requested: [], created: [] };

    // Provision Operations failed while the provisioning job was left live (crash between writes).
    // A fresh failure is left alone for a while: it may be a delivery that lost a race to another
    // one still finishing the work.
    for (const op of await jobs.listLiveWithFailedProvision(HALF_RECORDED_GRACE_SECONDS)) {
      await recordProvisionFailure(ds, { provisioningJobId: op.provisioningJobId, error: op.error ?? 'provision failed', failedStep: op.failedStep });
    }

    for (const id of await jobs.listFailedWithoutRollback()) {
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
