import { randomBytes } from 'node:crypto';
import { mayHaveTakenEffect } from '../clients/errors';
import type { CreatedAuthKey } from '../clients/tailscale/tailscale.types';
import { authKeyDescription, describesJob, type GuardContext, type OwnershipGuard } from '../fleet/ownership-guard';
import type { Logger } from '../lib/logger';
import type { WorkflowDeps } from './workflow-deps';

type AuthKeyDeps = Pick<WorkflowDeps, 'repositories' | 'tailscale'> & { guard: OwnershipGuard };

/** The job a key is made for, and the hostname its server joins as. */
export interface AuthKeyJob {
  provisioningJobId: string;
  hostname: string;
}

/**
 * Create calls one mint makes at most. Each further call comes only after the last one's answer was
 * unclear and whatever it made was revoked; past this the failure goes back to the queue's retries.
 */
const MINT_CALLS = 3;

/**
 * Makes the auth key a server of the job joins with, and records it on the job before anything can
 * use it. The create call is not repeated blindly: after an unclear answer (a timeout, a dropped
 * connection, a 5xx) Tailscale may have made a key whose secret nobody holds, a live credential that
 * could join a machine. So every key of one mint carries the same unique description; after an
 * unclear answer the keys with it are found, recorded and revoked, and the create is tried again.
 * Once a call succeeds, keys an earlier call of this mint made are revoked too, and only the one
 * returned stays live. A key whose create lands even later is revoked with the job's other keys when
 * the job ends (revokeJobAuthKeys), found by the job its description names.
 */
export async function mintJobAuthKey(deps: AuthKeyDeps, job: AuthKeyJob, ctx: GuardContext, log: Logger): Promise<CreatedAuthKey> {
  const description = authKeyDescription({ ...job, nonce: randomBytes(3).toString('hex') });
  for (let call = 1; ; call++) {
    let key: CreatedAuthKey;
    try {
      key = await deps.tailscale.createAuthKey({ description });
    } catch (err) {
      if (!mayHaveTakenEffect(err)) throw err;
      log.warn({ err, description }, '[Tailscale] Unclear answer to an auth key create; revoking whatever it made');
      await revokeStrays(deps, job, description, null, ctx, log);
      if (call >= MINT_CALLS) throw err;
      continue;
    }
    await deps.repositories.provisioningJobs.addAuthKey(job.provisioningJobId, key.id);
    if (call > 1) await revokeStrays(deps, job, description, key.id, ctx, log);
    return key;
  }
}

/**
 * Revokes the live keys described `description` other than `keep`: made by a create call of this
 * mint whose answer never arrived. Each is recorded on the job first, so a crash half-way leaves it
 * where the job's end looks, and forgotten once revoked.
 */
async function revokeStrays(
  deps: AuthKeyDeps,
  job: AuthKeyJob,
  description: string,
  keep: string | null,
  ctx: GuardContext,
  log: Logger,
): Promise<void> {
  const jobs = deps.repositories.provisioningJobs;
  const strays = (await deps.tailscale.listAuthKeys()).filter((k) => k.description === description && k.id !== keep);
  if (strays.length === 0) return;
  for (const key of strays) await jobs.addAuthKey(job.provisioningJobId, key.id);
  const recordedIds = await jobs.authKeyIds(job.provisioningJobId);
  const gone: string[] = [];
  for (const key of strays) {
    const outcome = await deps.guard.revokeAuthKey(key.id, { recordedIds, ...job }, ctx);
    if (outcome === 'refused') continue;
    gone.push(key.id);
    log.warn({ authKeyId: key.id }, `[Tailscale] Revoked auth key ${key.id}, made by a create call whose answer was lost`);
  }
  await jobs.forgetAuthKeys(job.provisioningJobId, gone);
}

/**
 * Revokes the auth keys of a job that has ended (a used or deleted key is fine) and forgets them:
 * those recorded for it, and any still live whose description names the job (a create whose answer
 * was lost, or a crash before the key was recorded). Each revocation goes through the ownership
 * guard: recorded for this job and described with it. `keepSole`: after a provision with a single
 * attempt's key and nothing else live, that key is the one the device joined with and is already
 * spent: no request needed.
 */
export async function revokeJobAuthKeys(
  deps: AuthKeyDeps,
  job: AuthKeyJob,
  ctx: GuardContext,
  log: Logger,
  o: { keepSole?: boolean } = {},
): Promise<void> {
  const jobs = deps.repositories.provisioningJobs;
  const live = (await deps.tailscale.listAuthKeys()).filter((k) => describesJob(k.description, job.provisioningJobId));
  const known = await jobs.authKeyIds(job.provisioningJobId);
  for (const key of live.filter((k) => !known.includes(k.id))) {
    log.warn({ authKeyId: key.id }, `[Tailscale] Auth key ${key.id} of job ${job.provisioningJobId} was never recorded; revoking it`);
    await jobs.addAuthKey(job.provisioningJobId, key.id);
  }
  const ids = await jobs.authKeyIds(job.provisioningJobId);
  if (ids.length === 0 || (o.keepSole && ids.length === 1 && live.length === 0)) return;
  for (const id of ids) {
    const outcome = await deps.guard.revokeAuthKey(id, { recordedIds: ids, ...job }, ctx);
    if (outcome === 'deleted') log.info({ authKeyId: id }, `[Tailscale] Revoked auth key ${id} of job ${job.provisioningJobId}`);
  }
  await jobs.forgetAuthKeys(job.provisioningJobId, ids);
}
