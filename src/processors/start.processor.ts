import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { PowerWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createStartProcessor(deps: RunnerDeps & { power: Pick<PowerWorkflow, 'start'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'start', job, token, ({ reporter, operation }) => deps.power.start(job.data.agentId, operation, reporter), signal);
}
