import type { Job } from 'bullmq';
import type { AgentJobData } from '../queues/queues';
import type { LifecycleService } from '../services/lifecycle.service';
import { runOperation, type RunnerDeps } from './run-operation';

export function createStopProcessor(deps: RunnerDeps & { lifecycle: Pick<LifecycleService, 'stop'> }) {
  return (job: Job<AgentJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'stop', job, token, ({ reporter }) => deps.lifecycle.stop(job.data.agentId, { operationId: job.data.operationId }, reporter), signal);
}
