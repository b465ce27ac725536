import type { Job } from 'bullmq';
import type { ProvisionJobData } from '../queues/queues';
import type { LifecycleService } from '../services/lifecycle.service';
import { runOperation, type RunnerDeps } from './run-operation';

export function createProvisionProcessor(deps: RunnerDeps & { lifecycle: Pick<LifecycleService, 'provision'> }) {
  return (job: Job<ProvisionJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(
      deps,
      'provision',
      job,
      token,
      async ({ reporter }) => {
        const { provisioningJobId, operationId } = job.data;
        await deps.lifecycle.provision({ provisioningJobId, operationId, queueJobId: job.id }, reporter);
      },
      signal,
    );
}
