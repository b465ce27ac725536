import type { GuardContext, OwnershipGuard } from '../fleet/ownership-guard';
import type { Logger } from '../lib/logger';
import type { WorkflowDeps } from './workflow-deps';

/**
 * Revokes the auth keys recorded for a job that has ended (a used or deleted key is fine) and
 * forgets them. Each revocation goes through the ownership guard: recorded for this job and
 * described with the job's hostname. `keepSole`: after a provision with a single attempt's key,
 * that key is the one the device joined with and is already spent: no request needed.
 */
export async function revokeJobAuthKeys(
  deps: Pick<WorkflowDeps, 'repositories'> & { guard: OwnershipGuard },
  job: { provisioningJobId: string; hostname: string },
  ctx: GuardContext,
  log: Logger,
  o: { keepSole?: boolean } = {},
): Promise<void> {
  const jobs = deps.repositories.provisioningJobs;
  const ids = await jobs.authKeyIds(job.provisioningJobId);
  if (ids.length === 0 || (o.keepSole && ids.length === 1)) return;
  for (const id of ids) {
    const outcome = await deps.guard.revokeAuthKey(id, { recordedIds: ids, ...job }, ctx);
    if (outcome === 'deleted') log.info({ authKeyId: id }, `[Tailscale] Revoked auth key ${id} of job ${job.provisioningJobId}`);
  }
  await jobs.forgetAuthKeys(job.provisioningJobId, ids);
}
