import type { Agent, Instance, ProvisioningJob } from '../entities';
import { NotFoundError } from '../errors';
import type { Db } from '../db/transitions';
import type { WorkflowDeps } from './workflow-deps';

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
