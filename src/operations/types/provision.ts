import { noArgs, type OperationDescriptor } from './descriptor';

/**
 * A new instance for an agent: a server with the tailnet join in its cloud-init, up to the device
 * being enrolled. Accepted with its agent (POST /v1/agents) or again for an agent in error
 * (reprovision), never as a plain agent command.
 */
export const provision = {
  args: noArgs,
  payload: 'provision',
  instance: { pending: ['provisioning'], provisioning: ['running'] },
  agent: { draft: ['provisioning'], provisioning: ['active'], error: ['provisioning'] },
  stuck: {
    statuses: {
      pending: (t) => t.marginMs,
      provisioning: (t) => 2 * t.actionTimeoutMs + t.enrollmentTimeoutMs + t.marginMs,
    },
    // A provision that failed for good is rolled back by the failed-provision listener and its sweep.
    failedForGood: 'rollback',
  },
  run: (w, job, r, op) => w.provision.provision({ provisioningJobId: job.data.provisioningJobId, ...op, queueJobId: job.id }, r),
} satisfies OperationDescriptor<'provision'>;
