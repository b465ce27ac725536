import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { HibernateWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createHibernateProcessor(deps: RunnerDeps & { hibernation: Pick<HibernateWorkflow, 'hibernate'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'hibernate', job, token, ({ reporter, operation }) => deps.hibernation.hibernate(job.data.agentId, operation, reporter), signal);
}
