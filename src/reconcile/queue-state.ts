import type { JobType } from 'bullmq';
import type { Operation, OperationType } from '../entities';
import { jobIdOf } from '../queues/jobs';
import type { ReconcilerDeps, Snapshot } from './types';

/** BullMQ states in which a job will still run (or is running). */
export const LIVE_JOB_STATES: readonly JobType[] = ['active', 'waiting', 'waiting-children', 'delayed', 'prioritized'];

/** The queue that carries operations of a type: every type has one (an unknown type does not compile). */
export function queueFor(queues: ReconcilerDeps['queues'], type: OperationType) {
  return queues[type];
}

async function jobState(queues: ReconcilerDeps['queues'], op: Operation): Promise<string | null> {
  const queue = queueFor(queues, op.type);
  const job = await queue.getJob(jobIdOf(op));
  return job ? await job.getState() : null;
}

/** An operation row for this agent that still has a job which will run (or is running). */
export async function liveOperation(
  queues: ReconcilerDeps['queues'],
  agentId: string,
  snapshot: Snapshot,
): Promise<Operation | null> {
  for (const op of snapshot.activeOps.get(agentId) ?? []) {
    if (op.type === 'reconcile') continue;
    const state = await jobState(queues, op);
    if (state && LIVE_JOB_STATES.includes(state as JobType)) return op;
  }
  return null;
}
