import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { LifecycleService } from '../services/lifecycle.service';
import { runOperation, type RunnerDeps } from './run-operation';

export function createStartProcessor(deps: RunnerDeps & { lifecycle: Pick<LifecycleService, 'start'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'start', job, token, ({ reporter }) => deps.lifecycle.start(job.data.agentId, { operationId: job.data.operationId }, reporter), signal);
}
