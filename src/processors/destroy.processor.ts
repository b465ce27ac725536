import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { LifecycleService } from '../services/lifecycle.service';
import { runOperation, type RunnerDeps } from './run-operation';

export function createDestroyProcessor(deps: RunnerDeps & { lifecycle: Pick<LifecycleService, 'destroy'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'destroy', job, token, ({ reporter }) => deps.lifecycle.destroy(job.data.agentId, { operationId: job.data.operationId }, reporter), signal);
}
