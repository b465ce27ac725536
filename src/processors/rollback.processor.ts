import type { Job } from 'bullmq';
import type { RollbackJobData } from '../queues/queues';
import type { LifecycleService } from '../services/lifecycle.service';
import { runOperation, type RunnerDeps } from './run-operation';

export function createRollbackProcessor(deps: RunnerDeps & { lifecycle: Pick<LifecycleService, 'rollbackFailedProvision'> }) {
  // The result (what was cleaned) becomes the job's return value, shown in Bull Board.
  return (job: Job<RollbackJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(
      deps,
      'rollback',
      job,
      token,
      ({ reporter }) => deps.lifecycle.rollbackFailedProvision(job.data.provisioningJobId, { operationId: job.data.operationId }, reporter),
      signal,
    );
}
