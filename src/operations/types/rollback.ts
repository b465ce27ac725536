import { noArgs, type OperationDescriptor } from './descriptor';

/**
 * Undoes a provision that failed for good: whatever it created is deleted, the instance fails and
 * the agent goes to `error`, from where it can be provisioned again. At most one per provisioning job.
 */
export const rollback = {
  args: noArgs,
  payload: 'rollback',
  instance: { pending: ['failed'], provisioning: ['failed'] },
  agent: { draft: ['error'], provisioning: ['error'] },
  run: (w, job, r, op) => w.teardown.rollback(job.data.provisioningJobId, op, r),
} satisfies OperationDescriptor<'rollback'>;
