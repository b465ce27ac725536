import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { TeardownWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createDestroyProcessor(deps: RunnerDeps & { teardown: Pick<TeardownWorkflow, 'destroy'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'destroy', job, token, ({ reporter }) => deps.teardown.destroy(job.data.agentId, { operationId: job.data.operationId }, reporter), signal);
}
