import type { Agent, Instance, InstanceStatus, ProvisioningJob } from '../entities';
import { NotFoundError, StateConflictError } from '../errors';
import { recordEvent, type Db, type NewEvent, type TransitionRequest } from '../db/transitions';
import type { Logger } from '../lib/logger';
import { errorMessage, guarded, moveTogether } from './guarded-moves';
import type { OperationContext, WorkflowDeps } from './workflow-deps';

type Repos = WorkflowDeps['repositories'];

/** The rows a workflow cannot do without: NotFoundError (permanent) when missing. */
export async function requireJob(repos: Repos, id: string): Promise<ProvisioningJob> {
  const job = await repos.provisioningJobs.findById(id);
  if (!job) throw new NotFoundError(`Job ${id} not found`);
  return job;
}

export async function requireAgent(repos: Repos, id: string, db?: Db): Promise<Agent> {
  const agent = await repos.agents.findById(id, db);
  if (!agent) throw new NotFoundError(`Agent ${id} not found`);
  return agent;
}

export async function requireInstance(repos: Repos, id: string, db?: Db): Promise<Instance> {
  const instance = await repos.instances.findById(id, db);
  if (!instance) throw new NotFoundError(`Instance ${id} not found`);
  return instance;
}

/** Locked until the transaction `db` ends, so the status checked is the one the moves start from. */
export async function requireInstanceForUpdate(repos: Repos, id: string, db: Db): Promise<Instance> {
  const instance = await repos.instances.findByIdForUpdate(id, db);
  if (!instance) throw new NotFoundError(`Instance ${id} not found`);
  return instance;
}

export function recordedServerIds(instance: Instance): number[] {
  return instance.serverId ? [Number(instance.serverId)] : [];
}

/** True when the instance's latest move into `status` was made by this operation (a redelivered, finished job). */
export async function reachedBy(repos: Repos, instanceId: string, status: InstanceStatus, operationId: string | null): Promise<boolean> {
  if (!operationId) return false;
  const last = await repos.events.latestMoveInto('instance', instanceId, status);
  return last?.operationId === operationId;
}

/**
 * The moves that end an operation's work on an instance, committed with the operation's success when
 * the runner gave `ctx.finish` (else alone), and with `done.events`: audit events of what this run
 * did, written whether or not the moves can happen. Two deliveries of one operation can run at once
 * for a while (a worker that lost its lock goes on until it notices): when the other delivery made
 * these moves first, the work is done, and this delivery finishes instead of failing on the
 * conflict. Answers false when it found the moves already made.
 */
export async function finishTogether(
  deps: Pick<WorkflowDeps, 'dataSource' | 'repositories'>,
  ctx: OperationContext,
  requests: readonly TransitionRequest[],
  done: { instanceId: string; status: InstanceStatus; lastStep: string; events?: readonly NewEvent[] },
): Promise<boolean> {
  const operationId = ctx.operationId ?? null;
  const events = done.events ?? [];
  try {
    const { finish } = ctx;
    if (finish) await guarded(() => finish(requests, done.lastStep, events));
    else await moveTogether(deps.dataSource, requests, events);
    return true;
  } catch (err) {
    if (err instanceof StateConflictError && events.length > 0) await recordEvents(deps.dataSource, events);
    if (!(err instanceof StateConflictError) || !(await finishedBy(deps.repositories, done.instanceId, done.status, operationId))) throw err;
    return false;
  }
}

/** Event rows on their own, in one transaction (what finishTogether writes when its moves cannot happen). */
async function recordEvents(ds: WorkflowDeps['dataSource'], events: readonly NewEvent[]): Promise<void> {
  await ds.transaction(async (m) => {
    for (const event of events) await recordEvent(m, event);
  });
}

/** True when the instance is in `status` and this operation moved it there. */
export async function finishedBy(repos: Repos, instanceId: string, status: InstanceStatus, operationId: string | null): Promise<boolean> {
  const instance = await repos.instances.findById(instanceId);
  return instance?.status === status && (await reachedBy(repos, instanceId, status, operationId));
}

/**
 * The agent's live instance; NotFoundError for an unknown agent. An instance implies its agent
 * (foreign key), so the agent is read only when there is none, to tell the two answers apart.
 */
export async function findLiveInstanceOfAgent(repos: Repos, agentId: string): Promise<Instance | null> {
  const found = await repos.instances.findLiveByAgent(agentId);
  if (!found) await requireAgent(repos, agentId);
  return found;
}

/**
 * Keeps a failed step's error on the instance (still in `status`) and logs it; a lost race is not
 * this run's failure to record. A failing write is logged, never thrown over the original error.
 */
export async function recordFailure(repos: Repos, instanceId: string, status: InstanceStatus, what: string, err: unknown, log: Logger): Promise<void> {
  if (err instanceof StateConflictError && err.lostRace) return;
  const message = errorMessage(err);
  log.error({ err }, `[Lifecycle] ${what} failed: ${message}`);
  await repos.instances
    .recordError(instanceId, status, message)
    .catch((dbErr: unknown) => log.error({ err: dbErr }, `[Lifecycle] Could not record the ${what.toLowerCase()} failure`));
}
