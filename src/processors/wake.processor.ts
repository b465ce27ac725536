import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { HibernateWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createWakeProcessor(deps: RunnerDeps & { hibernation: Pick<HibernateWorkflow, 'wake'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'wake', job, token, ({ reporter, operation }) => deps.hibernation.wake(job.data.agentId, operation, reporter), signal);
}
