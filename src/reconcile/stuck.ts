import type { JobType } from 'bullmq';
import type { Instance, Operation } from '../entities';
import { OPERATIONS, STUCK_STATUSES } from '../operations/types';
import { jobIdOf } from '../queues/jobs';
import { LIVE_JOB_STATES, queueFor } from './queue-state';
import type { PassContext, ReconcilerDeps, StuckFinding, TransitionalStatus } from './types';

/**
 * Stuck: an instance sitting in a transitional state past its timeout with no live job. Its
 * operation is put back on the queue, unless a rollback owns it or nothing can safely run again.
 */

export const TRANSITIONAL: readonly TransitionalStatus[] = STUCK_STATUSES.map((s) => s.status);
const WATCHED = new Map(STUCK_STATUSES.map((s) => [s.status, s]));

/** Derives per-state timeouts from the time each operation may legitimately take (its descriptor's rule). */
export function stuckTimeouts(o: {
  actionTimeoutMs: number;
  shutdownTimeoutMs: number;
  enrollmentTimeoutMs: number;
  /** Slack for queueing and backoff between attempts. */
  marginMs?: number;
}): Record<TransitionalStatus, number> {
  const inputs = { ...o, marginMs: o.marginMs ?? 5 * 60_000 };
  return Object.fromEntries(STUCK_STATUSES.map((s) => [s.status, s.timeout(inputs)])) as Record<TransitionalStatus, number>;
}

/** An instance sitting in a transitional state past its timeout: is anything still working on it? */
export async function checkStuck(ctx: PassContext, instance: Instance): Promise<StuckFinding | null> {
  const { deps } = ctx;
  const status = instance.status as TransitionalStatus;
  const watched = WATCHED.get(status);
  if (!watched) return null;
  const { type, failedForGood } = watched;
  const op =
    OPERATIONS[type].payload === 'provision'
      ? await provisionOperation(deps, instance)
      : await deps.repositories.operations.latestOfAgent(instance.agentId, type);
  const lastMove = Math.max(instance.updatedAt.getTime(), op?.updatedAt.getTime() ?? 0);
  const idleMs = ctx.now() - lastMove;
  if (idleMs < ctx.settings.stuckAfterMs[status]) return null;

  const base = {
    instanceId: instance.id,
    agentId: instance.agentId,
    status,
    idleSeconds: Math.round(idleMs / 1000),
    operationId: op?.id ?? null,
    operationType: op?.type ?? null,
  };
  const since = `in ${status} for ${base.idleSeconds}s`;
  if (!op) return { ...base, action: 'needs_attention', detail: `${since} and no ${type} operation exists` };
  if (op.status === 'succeeded' || op.status === 'cancelled') {
    return { ...base, action: 'needs_attention', detail: `${since} but ${type} operation ${op.id} is ${op.status}` };
  }
  if (failedForGood === 'rollback' && op.provisioningJobId) {
    const pj = await deps.repositories.provisioningJobs.findById(op.provisioningJobId);
    if (!pj) return { ...base, action: 'needs_attention', detail: `${since}; provisioning job ${op.provisioningJobId} is missing` };
    if (pj.status === 'failed' || pj.status === 'rolled_back') {
      return { ...base, action: 'awaiting_rollback', detail: `${since}; provisioning job ${pj.id} is ${pj.status}` };
    }
  }

  if (op.status === 'failed') {
    // A failed provision is rolled back by the failed-provision listener and its sweep, never retried.
    if (failedForGood === 'rollback') return { ...base, action: 'awaiting_rollback', detail: `${since}; ${type} operation ${op.id} failed for good` };
    return repairAfterFailure(deps, base, since, instance, op);
  }

  const queue = queueFor(deps.queues, type);
  const jobId = jobIdOf(op);
  const job = await queue.getJob(jobId);
  const state = job ? await job.getState() : 'missing';
  if (LIVE_JOB_STATES.includes(state as JobType)) {
    return { ...base, action: 'job_active', detail: `${since}; job ${jobId} is ${state}` };
  }
  if (failedForGood === 'rollback' && state === 'failed') {
    // A provision that failed for good is rolled back, never retried: the failed-provision listener
    // and its sweep own it (retrying here would race the rollback).
    return { ...base, action: 'awaiting_rollback', detail: `${since}; job ${jobId} failed for good` };
  }

  try {
    // Back to queued through the ledger; the same job id is delivered again (an ended job under it is
    // moved back to waiting with a fresh attempt budget, so the processor's backoff applies again).
    const requeued = await deps.ledger.requeue(op, `reconcile: instance ${since} with no live job (job ${jobId} ${state}); enqueued again`);
    if (job && (state === 'failed' || state === 'completed')) {
      await job.retry(state, { resetAttemptsMade: true, resetAttemptsStarted: true });
    } else {
      if (job) await job.remove();
      await deps.outbox.add(requeued, { instanceId: instance.id });
    }
  } catch (err) {
    return { ...base, action: 'error', detail: `${since}; could not enqueue ${type} again: ${(err as Error).message}` };
  }
  deps.metrics?.reconcileRepairs.inc({ kind: 'requeued' });
  return { ...base, action: 'requeued', detail: `${since}; job ${jobId} was ${state}, ${type} operation ${op.id} enqueued again` };
}

async function provisionOperation(deps: ReconcilerDeps, instance: Instance): Promise<Operation | null> {
  const pj = await deps.repositories.provisioningJobs.findByInstance(instance.id);
  if (!pj) return null;
  return deps.repositories.operations.findProvisionOf(pj.id);
}

/**
 * The operation that left the instance here failed for good, and a final state is final: its
 * failure was announced and it is not run again. The repair is a new operation of the same type,
 * requested by tailfleet itself, once per failed operation; its workflow resumes from the
 * transitional state, as any re-run does.
 */
async function repairAfterFailure(
  deps: ReconcilerDeps,
  base: Omit<StuckFinding, 'action' | 'detail'>,
  since: string,
  instance: Instance,
  failed: Operation,
): Promise<StuckFinding> {
  try {
    const { operation, created } = await deps.ledger.acceptRepair(failed, `reconcile: instance ${since}; ${failed.type} operation ${failed.id} failed for good`);
    if (created) {
      await deps.outbox.deliver(operation, { instanceId: instance.id });
      deps.metrics?.reconcileRepairs.inc({ kind: 'requeued' });
    }
    return {
      ...base,
      operationId: operation.id,
      action: 'requeued',
      detail: `${since}; ${failed.type} operation ${failed.id} failed for good, so ${failed.type} operation ${operation.id} was requested to finish the work`,
    };
  } catch (err) {
    return { ...base, action: 'error', detail: `${since}; could not request a new ${failed.type}: ${(err as Error).message}` };
  }
}
