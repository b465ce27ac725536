import type { Logger } from '../lib/logger';
import type { WorkflowDeps } from './workflow-deps';

/**
 * Revokes the auth keys recorded for a job that has ended (a used or deleted key is fine) and
 * forgets them. `keepSole`: after a provision with a single attempt's key, that key is the one
 * the device joined with and is already spent: no request needed.
 */
export async function revokeJobAuthKeys(
  deps: Pick<WorkflowDeps, 'repositories' | 'tailscale'>,
  provisioningJobId: string,
  log: Logger,
  o: { keepSole?: boolean } = {},
): Promise<void> {
  const jobs = deps.repositories.provisioningJobs;
  const ids = await jobs.authKeyIds(provisioningJobId);
  if (ids.length === 0 || (o.keepSole && ids.length === 1)) return;
  for (const id of ids) {
    if (await deps.tailscale.deleteAuthKey(id)) {
      log.info({ authKeyId: id }, `[Tailscale] Revoked auth key ${id} of job ${provisioningJobId}`);
    }
  }
  await jobs.forgetAuthKeys(provisioningJobId, ids);
}
