import type { Job } from 'bullmq';
import type { ProvisionJobData } from '../queues/queues';
import type { ProvisionWorkflow } from '../workflows';
import { runOperation, type RunnerDeps } from './run-operation';

export function createProvisionProcessor(deps: RunnerDeps & { provision: Pick<ProvisionWorkflow, 'provision'> }) {
  return (job: Job<ProvisionJobData>, token?: string, signal?: AbortSignal) =>
    runOperation(
      deps,
      'provision',
      job,
      token,
      ({ reporter, operation }) => {
        const { provisioningJobId } = job.data;
        return deps.provision.provision({ provisioningJobId, ...operation, queueJobId: job.id }, reporter);
      },
      signal,
    );
}
