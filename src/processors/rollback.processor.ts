import type { Job } from 'bullmq';
import type { RollbackJobData } from '../queues/queues';
import type { TeardownWorkflow } from '../workflows/teardown.workflow';
import { runOperation, type RunnerDeps } from './run-operation';

export function createRollbackProcessor(deps: RunnerDeps & { teardown: Pick<TeardownWorkflow, 'rollback'> }) {
  // The result (what was cleaned) becomes the job's return value, shown in Bull Board.
  return (job: Job<RollbackJobData>, _token?: string, signal?: AbortSignal) =>
    runOperation(
      deps,
      job,
      ({ reporter }) =>
        deps.teardown.rollback(job.data.provisioningJobId, { operationId: job.data.operationId }, reporter),
      {},
      signal,
    );
}
