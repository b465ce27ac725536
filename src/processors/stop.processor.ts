import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { PowerWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createStopProcessor(deps: RunnerDeps & { power: Pick<PowerWorkflow, 'stop'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'stop', job, token, ({ reporter, operation }) => deps.power.stop(job.data.agentId, operation, reporter), signal);
}
