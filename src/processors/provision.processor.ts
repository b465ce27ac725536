import type { Job } from 'bullmq';
import type { ProvisionJobData } from '../queues/queues';
import type { ProvisionWorkflow } from '../workflows/provision.workflow';
import { recordProvisionFailure } from '../services/rollback-listener';
import { runOperation, type RunnerDeps } from './run-operation';

export function createProvisionProcessor(deps: RunnerDeps & { provision: Pick<ProvisionWorkflow, 'provision'> }) {
  return (job: Job<ProvisionJobData>, _token?: string, signal?: AbortSignal) =>
    runOperation(
      deps,
      job,
      async ({ reporter }) => {
        const { provisioningJobId, operationId } = job.data;
        await deps.provision.provision({ provisioningJobId, operationId, queueJobId: job.id }, reporter);
      },
      {
        // The provisioning job is failed here, before BullMQ moves the job to failed, so the
        // database is right even when no listener sees the failure (the sweep relies on it).
        onFinalFailure: async (err, { failedStep }) => {
          await recordProvisionFailure(deps.dataSource, {
            provisioningJobId: job.data.provisioningJobId,
            error: err.message,
            failedStep,
          });
        },
      },
      signal,
    );
}
