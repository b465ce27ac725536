import type { Job } from 'bullmq';
import type { RollbackJobData } from '../queues/queues';
import type { TeardownWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createRollbackProcessor(deps: RunnerDeps & { teardown: Pick<TeardownWorkflow, 'rollback'> }) {
  return (job: Job<RollbackJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(deps, 'rollback', job, token, ({ reporter }) => deps.teardown.rollback(job.data.provisioningJobId, { operationId: job.data.operationId }, reporter), signal);
}
