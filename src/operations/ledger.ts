import { randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import {
  RecordNotFoundError,
  TransitionConflictError,
  insertOperation,
  requestAgentCommand,
  transition,
  transitionGroup,
  transitionTogether,
  tryTransition,
  type AgentCommandOutcome,
  type AgentCommandType,
  type CreatedOperation,
  type NewEvent,
  type NewAgentWithProvision,
  type PatchOf,
  type ProvisionAgainInput,
  type TransitionRequest,
  type ProvisionBundle,
  type Repositories,
} from '../db';
import type { Operation, OperationStatus, OperationType } from '../entities';
import { descriptorOf } from './types';
import type { Logger } from '../lib/logger';
import { checkJobAgainstOperation, isStallFailure, JobMismatchError, jobIdOf } from '../queues/jobs';
import { jobIds, type QueueName } from '../queues/queues';
import { isDatabaseUnavailable } from './errors';

/**
 * The operation ledger: the one module that moves an Operation through its life.
 *
 *   accept ─► queued ─claim─► running ─finish / succeed─► succeeded
 *               ▲  │            │ ├─fail────► failed ─(operator retry)─► queued/running
 *               │  cancel       │ └─retry / abandon ─► queued
 *               │  ▼            │
 *               │ cancelled     └─(BullMQ gave up without the processor)─► failed
 *               └──requeue (reconciler: a stuck operation whose job is gone)
 *
 * PostgreSQL is where work is accepted: `accept*` writes the operation and its event and returns; the
 * job that carries it to a worker is added after the commit by the outbox (src/operations/outbox.ts),
 * and added again by the relay whenever Redis lost it. Every move is a guarded transition with its
 * event row, so a stale writer gets a conflict instead of overwriting newer state.
 *
 * Ownership: a claim records the claiming delivery's token (BullMQ's lock token). Only that delivery
 * may record a failure or hand the operation back to the queue; a duplicate delivery that lost the
 * race cannot fail an operation another delivery is finishing, so it never triggers a rollback.
 * Success is accepted from any delivery: the work is done whoever did it.
 */

export type ClaimResult = 'claimed' | 'taken-over' | 'missing' | Extract<OperationStatus, 'succeeded' | 'cancelled' | 'failed'>;

/** The job that claims an operation: it must be that operation's own delivery. */
export interface Delivery {
  /** The queue the job came from; each operation type has its own. */
  type: string;
  jobId: string;
  agentId?: string;
  provisioningJobId?: string;
}

/** An operation's args as its type's descriptor declares them; JobMismatchError when they are not. */
function parseArgs(type: OperationType, args: unknown): Record<string, unknown> {
  const parsed = descriptorOf(type).args.safeParse(args);
  if (!parsed.success) throw new JobMismatchError(`Arguments of a ${type} are invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'args'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

function checkDelivery(delivery: Delivery, operation: Operation): void {
  checkJobAgainstOperation(
    delivery.type as QueueName,
    { id: delivery.jobId, data: { agentId: delivery.agentId, provisioningJobId: delivery.provisioningJobId } },
    operation,
  );
}

export interface FinalFailure {
  operation: Operation;
  /** The step the operation failed at, when known. */
  failedStep: string | null;
  error: string;
  /** The error itself, when the failure came from running the work (not from BullMQ). */
  cause?: unknown;
  logger: Logger;
}

/** Runs once per operation that failed for good: where the rollback of a failed provision is decided. */
export type FinalFailureHook = (failure: FinalFailure) => Promise<void>;

export interface LedgerDeps {
  dataSource: DataSource;
  repositories: Pick<Repositories, 'agents' | 'operations' | 'events'>;
  logger: Logger;
}

export interface StepState {
  /** The step reached last, written with the move that ends the attempt. */
  step?: string | null;
  percent?: number;
}

const stepPatch = (s: StepState): PatchOf<'operation'> =>
  s.step === null || s.step === undefined ? {} : { currentStep: s.step, progress: s.percent ?? 0 };

const STALLED_REASON = 'job stalled: its worker stopped';

/** What the caller of settleQueueFailure does next with the job. */
const FINAL_STATUSES: ReadonlySet<OperationStatus> = new Set(['succeeded', 'failed', 'cancelled']);

export type QueueFailureOutcome = 'requeue' | 'failed' | 'unchanged';

// Tries of a move that fails on the database itself (a dropped connection) before giving up.
const WRITE_TRIES = 5;
const WRITE_RETRY_MS = 100;

export class OperationLedger {
  private readonly ds: DataSource;
  private readonly repos: LedgerDeps['repositories'];
  private readonly logger: Logger;
  private finalFailureHook: FinalFailureHook | undefined;

  constructor(deps: LedgerDeps) {
    this.ds = deps.dataSource;
    this.repos = deps.repositories;
    this.logger = deps.logger;
  }

  /** The one final-failure hook (set by the composition root: it decides on rollback). */
  onFinalFailure(hook: FinalFailureHook): void {
    this.finalFailureHook = hook;
  }

  // ---------------------------------------------------------------------------------------------
  // accept: rows and events in PostgreSQL, nothing in Redis

  /** A new agent with its instance, provisioning job and queued provision operation. */
  acceptProvision(input: Omit<NewAgentWithProvision, 'operationId' | 'queueJobId'>): Promise<ProvisionBundle> {
    const operationId = randomUUID();
    return this.ds.transaction((m) =>
      this.repos.agents.createWithProvision({ ...input, operationId, queueJobId: jobIds.operation(operationId) }, m),
    );
  }

  /** A fresh instance for an agent in `error`, with its provisioning job and provision operation. */
  acceptReprovision(agentId: string, input: Omit<ProvisionAgainInput, 'operationId' | 'queueJobId'>): Promise<ProvisionBundle> {
    const operationId = randomUUID();
    return this.repos.agents.provisionAgain(agentId, { ...input, operationId, queueJobId: jobIds.operation(operationId) });
  }

  /** A stop, start or destroy: checked against the agent's state and inserted in one statement. */
  acceptAgentCommand(
    type: AgentCommandType,
    agentId: string,
    opts: { idempotencyKey: string | null; idempotencyRoute?: string | null; requestedBy?: string; args?: unknown; reason?: string },
  ): Promise<AgentCommandOutcome> {
    const operationId = randomUUID();
    return requestAgentCommand(this.ds, {
      args: parseArgs(type, opts.args ?? {}),
      type,
      agentId,
      operationId,
      queueJobId: jobIds.operation(operationId),
      idempotencyKey: opts.idempotencyKey,
      idempotencyRoute: opts.idempotencyRoute ?? null,
      requestedBy: opts.requestedBy,
      reason: opts.reason ?? null,
    });
  }

  /** At most one rollback per provisioning job: the key and the job id are fixed by the job. */
  acceptRollback(input: { agentId: string; provisioningJobId: string; key: string; reason: string; requestedBy?: string }): Promise<CreatedOperation> {
    return this.ds.transaction((m) =>
      insertOperation(m, {
        type: 'rollback',
        agentId: input.agentId,
        provisioningJobId: input.provisioningJobId,
        idempotencyKey: input.key,
        queueJobId: jobIds.rollback(input.provisioningJobId),
        reason: input.reason,
        requestedBy: input.requestedBy,
      }),
    );
  }

  /**
   * A new operation that finishes the work of one that failed for good and left its instance half-way
   * (the reconciler's repair; the failed one stays failed). At most one per failed operation: the
   * key names it, so a later pass gets the same operation back.
   */
  acceptRepair(failed: Pick<Operation, 'id' | 'type' | 'agentId'>, reason: string): Promise<CreatedOperation> {
    const id = randomUUID();
    return this.ds.transaction((m) =>
      insertOperation(m, { type: failed.type, id, agentId: failed.agentId, idempotencyKey: `repair:${failed.id}`, queueJobId: jobIds.operation(id), reason }),
    );
  }

  /** A manual reconcile pass. */
  acceptReconcile(opts: { requestedBy?: string } = {}): Promise<CreatedOperation> {
    const id = randomUUID();
    return insertOperation(this.ds, {
      type: 'reconcile',
      id,
      queueJobId: jobIds.operation(id),
      reason: 'reconcile pass requested',
      requestedBy: opts.requestedBy,
    });
  }

  // ---------------------------------------------------------------------------------------------
  // worker side

  /**
   * Moves the operation to running for this delivery. `running` is a redelivery after a stall (or a
   * duplicate delivery), which takes the claim over (`taken-over`: an earlier delivery may still be
   * at work). `failed` is final for everything but an operator: our own redeliveries move the
   * operation back to queued first, so a delivery finding it failed is an operator retrying the
   * failed job from Bull Board (recorded as the retry it is) or the failed attempt redelivered
   * (answered `failed`: nothing runs). The guarded move
   * from `queued` is tried first: it is the usual case and needs no read.
   */
  async claim(operationId: string, input: { attempt: number; token: string | null; delivery?: Delivery }): Promise<ClaimResult> {
    const { attempt, token, delivery } = input;
    // The claim only matches the operation the job belongs to; a job that names another fails below.
    const guard: NonNullable<TransitionRequest<'operation'>['guard']> = {};
    if (delivery) {
      guard.type = delivery.type;
      guard.queueJobId = delivery.jobId;
      if (delivery.agentId !== undefined) guard.agentId = delivery.agentId;
      if (delivery.provisioningJobId !== undefined) guard.provisioningJobId = delivery.provisioningJobId;
    }
    let from: OperationStatus = 'queued';
    for (let tries = 0; tries < 3; tries++) {
      try {
        const { row } = await transition(this.ds, {
          entity: 'operation',
          id: operationId,
          from: [from],
          to: 'running',
          reason: from === 'failed' ? `retried by an operator after it failed (attempt ${attempt})` : attempt === 1 ? 'job started' : `attempt ${attempt} started`,
          operationId,
          guard,
          patch: { attempts: attempt, finishedAt: null, failedStep: null, claimToken: token },
          // A retried operation keeps the time its first attempt started.
          patchIfNull: { startedAt: new Date() },
        });
        parseArgs(row.type, row.args);
        return 'claimed';
      } catch (err) {
        if (err instanceof RecordNotFoundError) return 'missing';
        // Changed under us (e.g. cancelled), already running, or not this job's operation.
        if (!(err instanceof TransitionConflictError)) throw err;
        const current = await this.repos.operations.findById(operationId);
        if (!current) return 'missing';
        if (delivery) checkDelivery(delivery, current);
        const status = current.status;
        if (status === 'succeeded' || status === 'cancelled') return status;
        if (status === 'running' && (await this.repos.operations.takeOverClaim(operationId, attempt, token))) {
          parseArgs(current.type, current.args);
          return 'taken-over';
        }
        if (status === 'failed') {
          // BullMQ counts an attempt when it fails a job, so an operator's retry of the failed job
          // comes with an attempt number past the one the operation failed at. A delivery at the
          // same attempt is the failed attempt itself, redelivered because its worker died before
          // BullMQ recorded the failure: the failure stands.
          if (attempt <= current.attempts) return 'failed';
          guard.attempts = current.attempts;
          from = 'failed';
        } else from = 'queued';
      }
    }
    throw new Error(`Operation ${operationId} keeps changing; try again later`);
  }

  /** Best-effort progress for people watching; written only while the operation is running. */
  progress(operationId: string, percent: number, step: string): Promise<boolean> {
    return this.repos.operations.reportProgress(operationId, percent, step);
  }

  /**
   * The work is done, so the operation succeeded. Usually it is `running`; but when BullMQ redelivered
   * the job while it ran, the duplicate may have handed it back to `queued` (a retryable failure)
   * meanwhile, which is moved back through `running`. A final state is final: an operation already
   * `failed` (or cancelled) stays so — the failure was announced, and for a provision it started the
   * rollback — and only an operator's retry runs it again. A write that fails on the database is
   * tried again, and if it still fails the error is thrown: the job must not complete in BullMQ
   * while its operation stays `running`, because nothing else looks at a completed job again.
   */
  async succeed(operationId: string, state: StepState = {}): Promise<void> {
    const done = this.succeeded(operationId, state);
    let from: OperationStatus = 'running';
    let conflicts = 0;
    for (let tries = 0; conflicts < 3; tries++) {
      try {
        if (from === 'running') await transition(this.ds, done);
        else {
          const back = { entity: 'operation', id: operationId, from: [from], to: 'running', reason: 'a duplicate delivery of the job finished the work', operationId } as const;
          await transitionGroup(this.ds, [back, done]);
        }
        return;
      } catch (err) {
        if (err instanceof RecordNotFoundError) return;
        if (!(err instanceof TransitionConflictError)) {
          await this.beforeWriteRetry(err, tries, operationId, 'Could not record the operation success; trying again');
          continue;
        }
        conflicts++;
        // transitionGroup reports the status of whichever move refused; only the first move can.
        from = err.actual as OperationStatus;
        if (FINAL_STATUSES.has(from)) {
          if (from === 'failed') this.logger.warn({ operationId }, 'The work finished after its operation was recorded failed; the failure stands');
          return;
        }
      }
    }
    this.logger.warn({ operationId }, 'Could not record the operation outcome: it keeps changing');
  }

  /**
   * The work's last moves (its instance and agent reaching their final statuses) and the operation's
   * success, committed together in one statement: nobody sees the instance `stopped` while its stop
   * is still `running`, and the success costs no round trip of its own. Answers true when the
   * operation succeeded with the moves; false when the operation was not `running` (a duplicate
   * delivery handed it back, or it already ended), in which case the moves alone were made and the
   * caller records the outcome with succeed(), which knows those cases. `events` (the work's audit
   * events) are written with the moves. A move that cannot happen throws as transitionTogether does
   * (TransitionConflictError, RecordNotFoundError), with nothing written. A write that fails on the
   * database, with the success or without it, is tried again, as in succeed.
   */
  async finish(operationId: string, moves: readonly TransitionRequest[], state: StepState = {}, events: readonly NewEvent[] = []): Promise<boolean> {
    let withSuccess = true;
    for (let tries = 0; ; ) {
      try {
        // The operation first: the same lock order as cancel() (operation, then the rows it works on).
        await transitionTogether(this.ds, withSuccess ? [this.succeeded(operationId, state), ...moves] : moves, events);
        return withSuccess;
      } catch (err) {
        const refused = err instanceof TransitionConflictError || err instanceof RecordNotFoundError;
        // The operation is not running: the moves alone, at once (not a failed try).
        if (refused && withSuccess && err.entity === 'operation' && err.id === operationId) withSuccess = false;
        else if (refused) throw err;
        else await this.beforeWriteRetry(err, tries++, operationId, 'Could not record the work\'s end; trying again');
      }
    }
  }

  /** An attempt failed and BullMQ will try again after its backoff. False when the claim is not ours. */
  retry(operationId: string, token: string | null, input: StepState & { reason: string; error: string }): Promise<boolean> {
    return this.handBack(operationId, token, input.reason, { ...stepPatch(input), error: input.error, failedStep: input.step ?? null });
  }

  /**
   * The attempt stops without counting as one: the worker is shutting down, the cloud asked us to
   * slow down, or our own database was unreachable. The job goes back to the queue.
   */
  abandon(operationId: string, token: string | null, input: StepState & { reason: string; error?: string }): Promise<boolean> {
    return this.handBack(operationId, token, input.reason, { ...stepPatch(input), ...(input.error ? { error: input.error } : {}) });
  }

  /**
   * The last attempt failed (or the error is permanent). Recorded only when this delivery still owns
   * the operation; then the final-failure hook runs. Returns the failed operation, or null when another
   * delivery owns it (or it already ended) and nothing was recorded.
   */
  async fail(
    operationId: string,
    token: string | null,
    input: StepState & { reason: string; error: string; cause?: unknown; logger?: Logger },
  ): Promise<Operation | null> {
    const moved = await this.move({
      entity: 'operation',
      id: operationId,
      from: ['running'],
      to: 'failed',
      reason: input.reason,
      operationId,
      guard: { claimToken: token },
      patch: { ...stepPatch(input), error: input.error, failedStep: input.step ?? null, finishedAt: new Date() },
    });
    if (moved) await this.runFinalFailureHook({ operation: moved, failedStep: input.step ?? null, error: input.error, cause: input.cause, logger: input.logger ?? this.logger });
    return moved;
  }

  /**
   * BullMQ failed an operation's job without the processor recording it: its workers died so often
   * that BullMQ gave up on it (a stall), or it was failed by hand. `seen` is the operation as read
   * *before* the job was seen failed, so the failure can only belong to the delivery `seen` names
   * (a job sitting in the failed set has no other delivery, short of an operator retrying it).
   *
   * The fate is decided by one guarded statement on that view — status and claim token unchanged —
   * so two deciders (the workers' `failed` listener and the relay) cannot both act, and neither can
   * touch a newer delivery that claimed the operation meanwhile:
   * - a stall is our own outage, not the work's failure: a running operation goes back to the queue,
   *   up to `stallLimit` times over its life, and a queued one (the stall came before the claim) is
   *   simply delivered again; past the limit a job that keeps killing its workers fails for good;
   * - any other failure fails the operation, and the final-failure hook runs.
   * Returns `requeue` when the caller must move the job back to waiting, `failed` when the operation
   * failed, `unchanged` when the view was stale (someone else decided first) or the operation ended.
   */
  async settleQueueFailure(
    seen: Pick<Operation, 'id' | 'status' | 'claimToken'>,
    error: string,
    opts: { stallLimit: number; logger?: Logger },
  ): Promise<QueueFailureOutcome> {
    if (seen.status !== 'queued' && seen.status !== 'running') return 'unchanged';
    const stalled = isStallFailure(error);
    if (stalled && seen.status === 'queued') return 'requeue';
    const guard = { claimToken: seen.claimToken };
    if (stalled) {
      const stalls = await this.repos.events.countWithReason('operation', seen.id, STALLED_REASON);
      if (stalls < opts.stallLimit) {
        const moved = await this.move({
          entity: 'operation',
          id: seen.id,
          from: ['running'],
          to: 'queued',
          reason: `${STALLED_REASON} (${stalls + 1} of ${opts.stallLimit}): ${error}; delivered again`,
          operationId: seen.id,
          guard,
          patch: { claimToken: null },
        });
        return moved ? 'requeue' : 'unchanged';
      }
    }
    const moved = await this.move({
      entity: 'operation',
      id: seen.id,
      from: [seen.status],
      to: 'failed',
      reason: `job failed in the queue: ${error}`,
      operationId: seen.id,
      guard,
      patch: { error, finishedAt: new Date() },
    });
    if (!moved) return 'unchanged';
    await this.runFinalFailureHook({ operation: moved, failedStep: moved.failedStep, error, logger: opts.logger ?? this.logger });
    return 'failed';
  }

  // ---------------------------------------------------------------------------------------------
  // outside the worker

  /**
   * Puts an operation back in the queue because nothing is working on it (the reconciler found its
   * instance stuck and its job gone or ended). The relay or the caller then delivers it.
   */
  async requeue(operation: Operation, reason: string): Promise<Operation> {
    // Never from an end: a final state is final (the reconciler requests a new operation instead).
    if (FINAL_STATUSES.has(operation.status)) throw new TransitionConflictError('operation', operation.id, ['queued', 'running'], operation.status, 'queued');
    const from: OperationStatus[] = operation.status === 'queued' ? ['running'] : [operation.status];
    const { row } = await transition(this.ds, {
      entity: 'operation',
      id: operation.id,
      from,
      to: 'queued',
      allowSame: true,
      reason,
      patch: { queueJobId: jobIdOf(operation), finishedAt: null, claimToken: null },
    });
    return row;
  }

  /** Cancels an operation that has not started. Throws TransitionConflictError when it has. */
  async cancel(
    operationId: string,
    opts: { reason?: string; actor?: string; also?: readonly TransitionRequest[] } = {},
  ): Promise<Operation> {
    const request = {
      entity: 'operation',
      id: operationId,
      from: ['queued'],
      to: 'cancelled',
      reason: opts.reason ?? 'cancelled before it started',
      operationId,
      actor: opts.actor,
      patch: { finishedAt: new Date() },
    } as const;
    if (!opts.also?.length) return (await transition(this.ds, request)).row;
    // The rows the operation was going to work on move with it (e.g. a provision's instance and job).
    const [first] = await transitionGroup(this.ds, [request, ...opts.also]);
    return first.row as Operation;
  }

  /**
   * A queued operation that can never run (its queue job refused it, or it was superseded): failed,
   * with its idempotency key kept so a retried request finds the answer.
   */
  async reject(operationId: string, error: string): Promise<Operation | null> {
    return this.move({
      entity: 'operation',
      id: operationId,
      from: ['queued'],
      to: 'failed',
      reason: error,
      operationId,
      patch: { error, finishedAt: new Date() },
    });
  }

  // ---------------------------------------------------------------------------------------------

  private async handBack(operationId: string, token: string | null, reason: string, patch: PatchOf<'operation'>): Promise<boolean> {
    const moved = await this.move({
      entity: 'operation',
      id: operationId,
      from: ['running'],
      to: 'queued',
      reason,
      operationId,
      guard: { claimToken: token },
      patch,
    });
    return moved !== null;
  }

  /** The move of a running operation to succeeded, with the step reached last. */
  private succeeded(operationId: string, state: StepState): TransitionRequest<'operation'> {
    const patch = { ...stepPatch(state), progress: 100, error: null, failedStep: null, finishedAt: new Date() };
    return { entity: 'operation', id: operationId, from: ['running'], to: 'succeeded', reason: 'job succeeded', operationId, patch };
  }

  /** Waits before another try of a write that failed on the database; throws the error after the last try. */
  private async beforeWriteRetry(err: unknown, tries: number, operationId: string, message: string): Promise<void> {
    if (tries + 1 >= WRITE_TRIES) throw err;
    this.logger.warn({ err, operationId, tries: tries + 1 }, message);
    await new Promise((resolve) => setTimeout(resolve, WRITE_RETRY_MS * 2 ** tries));
  }

  /** A guarded move; null when the row is gone or another writer moved it first. */
  private move(req: TransitionRequest<'operation'>): Promise<Operation | null> {
    return tryTransition(this.ds, req);
  }

  private async runFinalFailureHook(failure: FinalFailure): Promise<void> {
    const { operation, logger } = failure;
    if (!this.finalFailureHook) return;
    try {
      await this.finalFailureHook(failure);
    } catch (err) {
      // The rollback sweep repeats this work, so a failure here is logged, not fatal — unless it is
      // our own database that is down, which the caller must see to try again later.
      if (isDatabaseUnavailable(err)) throw err;
      logger.error({ err, operationId: operation.id }, 'Final-failure handling failed');
    }
  }
}
