import type { Job } from 'bullmq';
import type { DataSource } from 'typeorm';
import type { OperationRepository } from '../db';
import { withAdvisoryLock } from '../db/advisory-lock';
import type { Operation } from '../entities';
import { errorMessage } from '../errors';
import type { Logger } from '../lib/logger';
import { PeriodicPass } from '../lib/periodic';
import { jobIdOf, queueOf, STALL_REQUEUE_LIMIT } from '../queues/jobs';
import type { OperationLedger, QueueFailureOutcome } from './ledger';
import type { Outbox } from './outbox';

/**
 * The outbox relay: Redis may lose anything at any moment (a restart without persistence, FLUSHALL,
 * a failover, a crash between the API's commit and its add), PostgreSQL may not. Every few seconds,
 * and once when a worker process starts, the relay reads the accepted work that is not finished —
 * queued and running operations — and makes sure each has its job:
 *
 * - queued, job missing → added again under its own job id;
 * - queued, job failed or completed in Redis (a requeue cut short) → moved back to waiting;
 * - running, job missing for longer than a worker's lock (the worker died and Redis lost the job
 *   too) → added again; the new delivery takes the claim over. A running job whose worker is alive
 *   but whose key vanished is given that long to finish first;
 * - running, job failed in Redis (BullMQ gave up without the processor recording it) → failed
 *   through the ledger, which runs the final-failure hook.
 *
 * Only one process relays at a time (a PostgreSQL advisory lock held for the pass); the others skip.
 * Operations younger than `graceMs` are left to the API's own add. The pass costs one SQL statement
 * and one Redis round trip for all pending operations, plus one call per job that needs repair.
 */

export interface RelayDeps {
  dataSource: DataSource;
  operations: Pick<OperationRepository, 'findPending'>;
  ledger: Pick<OperationLedger, 'settleQueueFailure'>;
  outbox: Outbox;
  logger: Logger;
  /** Time between passes (default 5000). */
  intervalMs?: number;
  /** Least age of an operation before the relay looks at it (default 2000). */
  graceMs?: number;
  /** How long a running operation's job may be missing before it is delivered again (default 60000). */
  runningGraceMs?: number;
  /** Most operations looked at per pass (default 1000). */
  batchSize?: number;
  /** Runs in each pass after the operations: re-creates job schedulers Redis lost. */
  ensureSchedulers?: () => Promise<void>;
}

export interface RelayResult {
  /** false when another process held the relay lock. */
  ran: boolean;
  checked: number;
  added: number;
  retried: number;
  failed: number;
}

/**
 * A job BullMQ failed without its processor recording the outcome (see the ledger's
 * settleQueueFailure). `seen` must have been read before the job was seen in the failed set. The job
 * is moved back to waiting only when the ledger put its operation back in the queue; a view that
 * turns out stale changes nothing. Returns what the ledger decided.
 */
export async function settleFailedJob(
  ledger: Pick<OperationLedger, 'settleQueueFailure'>,
  seen: Pick<Operation, 'id' | 'status' | 'claimToken'>,
  job: Pick<Job, 'retry'>,
  reason: string,
  logger?: Logger,
): Promise<QueueFailureOutcome> {
  const outcome = await ledger.settleQueueFailure(seen, reason, { stallLimit: STALL_REQUEUE_LIMIT, logger });
  if (outcome === 'requeue') {
    // Another decider may have moved it back already (a queued operation has no guarded move).
    await job.retry('failed').catch((err: unknown) => logger?.info({ err: { message: (err as Error).message } }, 'Job already moved back to waiting'));
  }
  return outcome;
}

// Arbitrary, fixed: the advisory lock key of the relay (the reconciler uses another).
const RELAY_LOCK_KEY = 0x7466_6f62; // "tfob"

export class OutboxRelay extends PeriodicPass<RelayResult> {
  /** Running operations whose job was missing, and since when (this process's view). */
  private readonly missingSince = new Map<string, number>();

  constructor(private readonly deps: RelayDeps) {
    super(deps.intervalMs ?? 5000);
  }

  protected override passEnded(r: RelayResult): void {
    if (r.added + r.retried + r.failed > 0) this.deps.logger.warn({ reason: 'schedule', ...r }, 'Relay delivered operations Redis did not hold');
  }

  protected passFailed(err: unknown): void {
    this.deps.logger.warn({ err: { message: errorMessage(err) }, reason: 'schedule' }, 'Relay pass failed; trying again next interval');
  }

  protected async pass(): Promise<RelayResult> {
    const result: RelayResult = { ran: false, checked: 0, added: 0, retried: 0, failed: 0 };
    await withAdvisoryLock(this.deps.dataSource, RELAY_LOCK_KEY, async () => {
      result.ran = true;
      await this.relay(result);
      await this.deps.ensureSchedulers?.();
    });
    return result;
  }

  private async relay(result: RelayResult): Promise<void> {
    const pending = await this.deps.operations.findPending({
      olderThanMs: this.deps.graceMs ?? 2000,
      limit: this.deps.batchSize ?? 1000,
    });
    result.checked = pending.length;
    const jobs = pending.map(({ operation }) => ({
      queue: queueOf(operation.type),
      jobId: jobIdOf(operation),
    }));
    const present = await this.deps.outbox.presence(jobs);
    const now = Date.now();
    const stillMissing = new Set<string>();

    for (let i = 0; i < pending.length; i++) {
      const { operation, instanceId } = pending[i]!;
      const { queue, jobId } = jobs[i]!;
      const log = this.deps.logger.child({ operationId: operation.id, type: operation.type, jobId });
      if (!present[i]) {
        if (operation.status === 'running') {
          stillMissing.add(operation.id);
          const since = this.missingSince.get(operation.id) ?? now;
          this.missingSince.set(operation.id, since);
          if (now - since < (this.deps.runningGraceMs ?? 60_000)) continue;
        }
        await this.deps.outbox.add(operation, { instanceId: instanceId ?? undefined });
        this.missingSince.delete(operation.id);
        result.added++;
        log.warn({ status: operation.status }, 'Operation had no job in the queue; delivered it again');
        continue;
      }
      // The job exists; most are waiting, delayed or active, which is all as it should be. Only an
      // operation that has not moved for a while is worth the state look-up.
      if (now - operation.updatedAt.getTime() < (this.deps.runningGraceMs ?? 60_000)) continue;
      const state = await this.deps.outbox.state(queue, jobId);
      if (state === 'failed' && operation.status === 'running') {
        // `operation` was read before the job's state: the view settleFailedJob needs.
        const job = await this.deps.outbox.job(queue, jobId);
        const outcome = job ? await settleFailedJob(this.deps.ledger, operation, job, job.failedReason || 'job failed in the queue', log) : 'unchanged';
        if (outcome === 'requeue') result.retried++;
        else if (outcome === 'failed') result.failed++;
      } else if (state === 'failed' || state === 'completed') {
        await this.redeliver(operation, queue, jobId, state, instanceId);
        result.retried++;
        log.warn({ status: operation.status, state }, 'Operation still pending but its job had ended; moved the job back to waiting');
      }
    }
    for (const id of this.missingSince.keys()) if (!stillMissing.has(id)) this.missingSince.delete(id);
  }

  /** The job id is taken by an ended job: move that job back to waiting, with a fresh attempt budget. */
  private async redeliver(operation: Operation, queue: ReturnType<typeof queueOf>, jobId: string, state: 'failed' | 'completed', instanceId: string | null) {
    const job = await this.deps.outbox.job(queue, jobId);
    if (!job) {
      await this.deps.outbox.add(operation, { instanceId: instanceId ?? undefined });
      return;
    }
    await job.retry(state, { resetAttemptsMade: true, resetAttemptsStarted: true });
  }
}
