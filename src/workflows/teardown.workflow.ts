import { CloudApiError } from '../clients/errors';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { LIVE_INSTANCE_STATUSES, type AgentStatus, type Instance, type InstanceStatus } from '../entities';
import type { Db, PatchOf, StatusOf } from '../db/transitions';
import { StateConflictError } from '../errors';
import { hostnameMatches } from '../fleet/devices';
import { judgeDevice, judgeServer, type DeviceEvidence, type GuardContext, type OwnershipGuard, type ServerEvidence } from '../fleet/ownership-guard';
import { agentServerTerms, jobServerTerms } from '../fleet/server-labels';
import type { Logger } from '../lib/logger';
import { revokeJobAuthKeys } from './auth-keys';
import { errorMessage, move } from './guarded-moves';
import { recordedServerIds, requireAgent, requireInstance, requireInstanceForUpdate, requireJob } from './records';
import { deleteInstanceSnapshots, findSnapshots } from './snapshots';
import { listWithRecorded } from './servers';
import { silentReporter, type StepReporter } from './step-reporter';
import type { OperationContext, WorkflowDeps } from './workflow-deps';

export interface RollbackResult {
  cleanedHetzner: boolean;
  cleanedTailscale: boolean;
  alreadyRolledBack: boolean;
}

const LIVE: readonly InstanceStatus[] = LIVE_INSTANCE_STATUSES;
const DESTROYABLE: InstanceStatus[] = LIVE.filter((s) => s !== 'destroying');
const NOT_DESTROYED_AGENT: AgentStatus[] = ['draft', 'provisioning', 'active', 'paused', 'hibernated', 'error'];

/**
 * Ids one teardown run knows no longer exist: deleted by it (the delete's action completed, or the
 * API answered 404) or read as gone. Ids are never reused, so they need no second look when the run
 * confirms that nothing is left.
 */
interface Gone {
  servers: Set<string>;
  devices: Set<string>;
}

const nothingGoneYet = (): Gone => ({ servers: new Set(), devices: new Set() });

/** A row moved from the status it was read in to failed. */
function moveToFailed<K extends 'instance' | 'provisioning_job'>(
  m: Db,
  entity: K,
  row: { id: string; status: StatusOf[K] },
  reason: string,
  operationId: string | null,
  patch: PatchOf<K>,
): Promise<boolean> {
  return move(m, { entity, id: row.id, from: [row.status], to: 'failed' as StatusOf[K], reason, operationId, patch });
}

/**
 * Destroy (an agent, for good) and rollback (a provision that failed for good) both delete an
 * instance's servers and tailnet device; they share that code and differ in which rows they move.
 * Both may run again after a crash at any point and finish the same work.
 */
export class TeardownWorkflow {
  private readonly guard: OwnershipGuard;

  constructor(private readonly deps: WorkflowDeps) {
    this.guard = deps.guard;
  }

  async destroy(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const { dataSource: ds, repositories: repos } = this.deps;
    const operationId = ctx.operationId ?? null;
    const log = this.deps.logger.child({ agentId, operationId, operation: 'destroy' });
    const agent = await requireAgent(repos, agentId);
    // The machine's credential goes first: a machine on its way out reports nothing any more.
    await repos.tokens.revokeAgentTokens(agentId);
    const found = await repos.instances.findLiveByAgent(agentId);

    if (!found) {
      if (agent.status === 'destroyed') {
        log.info(`[Lifecycle] Agent ${agentId} already destroyed`);
        await r.step('done', 100, 'already destroyed');
        return;
      }
      // Without a live instance nothing should exist; the labelled sweep catches a server a crashed provision left.
      log.info(`[Lifecycle] Agent ${agentId} has no live instance, nothing to clean up but leftovers`);
      await r.step('delete-server', 30, 'looking for leftover servers');
      await this.deleteServers(agentServerTerms(agentId), { agentId }, { operation: 'destroy', operationId, agentId }, log, nothingGoneYet());
      await move(ds, { entity: 'agent', id: agentId, from: NOT_DESTROYED_AGENT, to: 'destroyed', reason: 'destroyed', operationId, allowSame: true });
      await r.step('done', 100, 'destroyed');
      log.info(`[Lifecycle] Agent ${agentId} destroyed successfully`);
      return;
    }

    if (found.status === 'destroying') {
      log.info('[Lifecycle] Instance already destroying, resuming');
    } else {
      await r.step('prepare', 5, 'marking the instance as destroying');
      await move(ds, {
        entity: 'instance',
        id: found.id,
        from: DESTROYABLE,
        to: 'destroying',
        reason: `destroy requested (was ${found.status})`,
        operationId,
        // A parallel destroy of the same agent got there first; both finish the same work.
        allowSame: true,
      });
    }
    // Read after the transition: any server a provision managed to record is visible now, and any it
    // creates from here on is refused by its guarded write and deleted by that provision.
    const instance = await requireInstance(repos, found.id);
    const hostname = this.deps.fleet.hostnameOf(instance, agent);
    const gctx: GuardContext = { operation: 'destroy', operationId, agentId, instanceId: instance.id };
    const serverEvidence: ServerEvidence = { agentId, recordedIds: recordedServerIds(instance) };
    const gone = nothingGoneYet();

    try {
      await r.step('delete-server', 20, 'deleting the server');
      await this.deleteServers(agentServerTerms(agentId), serverEvidence, gctx, log, gone);
      await r.step('delete-device', 60, 'removing the tailnet device');
      await this.deleteDevices(instance, hostname, gctx, log, gone);
      await r.step('delete-snapshot', 70, 'deleting hibernation snapshots');
      await this.deleteSnapshots(instance, gctx);
      await r.step('confirm', 80, 'confirming server, device and snapshots are gone');
      await this.confirmGone(agentServerTerms(agentId), serverEvidence, instance, hostname, gone);
    } catch (err) {
      const message = errorMessage(err);
      log.error({ err }, `[Lifecycle] Destroy of agent ${agentId} failed: ${message}`);
      await repos.instances
        .recordError(instance.id, 'destroying', message)
        .catch((dbErr: unknown) => log.error({ err: dbErr }, '[Lifecycle] Could not record the destroy failure'));
      throw err;
    }

    await r.step('finish', 90, 'marking the instance as destroyed');
    await ds.transaction(async (m) => {
      const moved = await move(m, {
        entity: 'instance',
        id: instance.id,
        from: ['destroying'],
        to: 'destroyed',
        reason: 'server and device deleted',
        operationId,
        patch: { destroyedAt: new Date(), error: null },
        allowSame: true,
      });
      if (!moved) return; // a parallel destroy finished first and recorded everything
      await move(m, { entity: 'agent', id: agentId, from: NOT_DESTROYED_AGENT, to: 'destroyed', reason: 'destroyed', operationId, allowSame: true });
      // A provision still open for this instance can never finish now; mark it so the rollback sweep closes it.
      for (const job of await repos.provisioningJobs.listOpenByInstance(instance.id, m)) {
        await moveToFailed(m, 'provisioning_job', job, 'instance destroyed', operationId, {
          error: 'Instance destroyed before provisioning finished',
          finishedAt: new Date(),
        });
      }
    });
    await r.step('done', 100, 'destroyed');
    log.info(`[Lifecycle] Agent ${agentId} destroyed successfully`);
  }

  /** Cleans up after a provision that failed for good: its servers, its device, its auth keys. */
  async rollback(provisioningJobId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<RollbackResult> {
    const { dataSource: ds, repositories: repos } = this.deps;
    const operationId = ctx.operationId ?? null;
    const job = await requireJob(repos, provisioningJobId);
    const agentId = job.agentId;
    const log = this.deps.logger.child({ agentId, operationId, provisioningJobId, operation: 'rollback' });

    if (job.status === 'rolled_back') {
      log.info(`[Lifecycle] Job ${provisioningJobId} already rolled back`);
      await r.step('done', 100, 'already rolled back');
      return { cleanedHetzner: false, cleanedTailscale: false, alreadyRolledBack: true };
    }
    if (job.status === 'succeeded') {
      throw new StateConflictError(`Job ${provisioningJobId} succeeded; destroy the agent instead of rolling back`);
    }

    await r.step('prepare', 5, 'marking the instance as failed');
    // The instance leaves `provisioning` before anything is deleted: an attempt still running can then
    // not record a new server (its guarded write fails and it deletes what it made).
    const { instance, agent, owned } = await ds.transaction(async (m) => {
      const inst = await requireInstanceForUpdate(repos, job.instanceId, m);
      const ag = await requireAgent(repos, agentId, m);
      if (inst.status === 'pending' || inst.status === 'provisioning') {
        await moveToFailed(m, 'instance', inst, 'provision failed, rolling back', operationId, { error: 'Rolling back after provision failure' });
        if (ag.status === 'draft' || ag.status === 'provisioning') {
          await move(m, { entity: 'agent', id: agentId, from: [ag.status], to: 'error', reason: 'provision rolled back', operationId });
        }
        return { instance: inst, agent: ag, owned: true };
      }
      // failed: an earlier rollback run stopped after this point. destroyed: destroy already cleaned up.
      if (inst.status === 'failed') return { instance: inst, agent: ag, owned: true };
      if (inst.status === 'destroyed') return { instance: inst, agent: ag, owned: false };
      throw new StateConflictError(`Instance ${inst.id} is ${inst.status}; destroy the agent instead of rolling back`);
    });

    // Every instance of an agent gets the same hostname: match devices by it only while no newer
    // instance is live, or this rollback could delete that instance's device.
    const newer = await repos.instances.findLiveByAgent(agentId);
    const agentHostname = this.deps.fleet.hostnameOf(instance, agent);
    const hostname = newer ? null : agentHostname;

    const gctx: GuardContext = { operation: 'rollback', operationId, agentId, instanceId: instance.id };
    const gone = nothingGoneYet();
    await r.step('delete-server', 20, 'deleting the servers of this job');
    const cleanedHetzner = await this.deleteServers(
      jobServerTerms({ agentId, provisioningJobId }),
      { agentId, provisioningJobId, recordedIds: recordedServerIds(instance) },
      gctx,
      log,
      gone,
    );
    await r.step('delete-device', 60, 'removing the tailnet device');
    const cleanedTailscale = await this.deleteDevices(instance, hostname, gctx, log, gone);
    await revokeJobAuthKeys({ ...this.deps, guard: this.guard }, { provisioningJobId: job.id, hostname: agentHostname }, gctx, log);
    // The machine is gone, so is its reporter's credential (a reprovision issues a new one).
    if (owned) await repos.tokens.revokeAgentTokens(agentId);
    if (!cleanedHetzner && !cleanedTailscale) log.info(`[Lifecycle] No VM to clean up for job ${provisioningJobId}`);

    await r.step('finish', 90, 'marking the job as rolled back');
    const summary = `Rolled back after provision failure. Cleaned: Hetzner=${cleanedHetzner}, Tailscale=${cleanedTailscale}`;
    await ds.transaction(async (m) => {
      if (owned) await repos.instances.recordError(instance.id, 'failed', summary, m);
      await move(m, {
        entity: 'provisioning_job',
        id: job.id,
        from: job.status === 'queued' ? ['queued'] : ['running', 'failed'],
        to: 'rolled_back',
        reason: summary,
        operationId,
        patch: { finishedAt: new Date() },
      });
    });
    await r.step('done', 100, summary);
    log.info({ cleanedHetzner, cleanedTailscale }, `[Lifecycle] Cleanup complete for job ${provisioningJobId}`);
    return { cleanedHetzner, cleanedTailscale, alreadyRolledBack: false };
  }

  /**
   * Every server of this fleet matching the terms, and the recorded ones (read by id when the
   * listing does not show them: their labels may have been changed), through the ownership guard.
   * True if any was deleted; a refused server stays and is left to its finding.
   */
  private async deleteServers(terms: string[], evidence: ServerEvidence, ctx: GuardContext, log: Logger, gone: Gone): Promise<boolean> {
    let deleted = false;
    for (const server of await this.candidateServers(terms, evidence, gone)) {
      const outcome = await this.guard.deleteServer(server, evidence, ctx);
      if (outcome !== 'refused') gone.servers.add(String(server.id));
      if (outcome === 'deleted') {
        deleted = true;
        log.info({ serverId: server.id }, `[Lifecycle] Server ${server.id} deleted`);
      }
    }
    return deleted;
  }

  /** From a listing shared with concurrent teardowns, taken after this call. */
  private candidateServers(terms: string[], evidence: ServerEvidence, gone: Gone): Promise<HetznerServer[]> {
    return listWithRecorded(this.deps, terms, evidence.recordedIds ?? [], { shared: true, gone: gone.servers });
  }

  /**
   * The instance's tailnet device, through the ownership guard: the recorded id, the agent's
   * hostname, and whatever holds the recorded tailnet address — the last only as a candidate the
   * guard judges (an address may have been handed to another device). True if a device was deleted.
   */
  private async deleteDevices(instance: Instance, hostname: string | null, ctx: GuardContext, log: Logger, gone: Gone): Promise<boolean> {
    const evidence = this.deviceEvidence(instance, hostname);
    let deleted = false;
    for (const device of await this.instanceDevices(instance, hostname, gone)) {
      const outcome = await this.guard.deleteDevice(device, evidence, ctx);
      if (outcome !== 'refused') gone.devices.add(device.id);
      if (outcome === 'deleted') {
        deleted = true;
        log.info({ deviceId: device.id }, `[Lifecycle] Device ${device.id} removed from the tailnet`);
      }
    }
    return deleted;
  }

  private deviceEvidence(instance: Instance, hostname: string | null): DeviceEvidence {
    return {
      recordedIds: instance.tailscaleDeviceId ? [instance.tailscaleDeviceId] : [],
      hostname,
      tags: this.deps.tailscale.tags,
      ip: instance.tailscaleIp,
    };
  }

  /** A hibernated (or hibernating, or waking) instance's snapshot, and any other this agent's snapshots. */
  private deleteSnapshots(instance: Instance, ctx: GuardContext): Promise<void> {
    return deleteInstanceSnapshots({ ...this.deps, hetzner: this.sharedImages() }, instance, { agentId: instance.agentId }, { guard: this.guard, ctx });
  }

  /** The Hetzner client with its image listings shared with concurrent teardowns (taken after each call). */
  private sharedImages(): Pick<HetznerClient, 'listImages' | 'getImage' | 'deleteImage'> {
    const { hetzner } = this.deps;
    return {
      listImages: (o = {}) => (o.labelSelector ? hetzner.listImagesShared({ ...o, labelSelector: o.labelSelector }) : hetzner.listImages(o)),
      getImage: (id) => hetzner.getImage(id),
      deleteImage: (id) => hetzner.deleteImage(id),
    };
  }

  /**
   * From a device listing shared with concurrent teardowns, taken after this call. A recorded device
   * the listing does not show is most likely gone; one read by id makes sure (a 404 is null),
   * unless this run already knows it gone.
   */
  private async instanceDevices(instance: Instance, hostname: string | null, gone: Gone): Promise<TailscaleDevice[]> {
    const { tailscale } = this.deps;
    const devices = await tailscale.listDevicesShared();
    const { tailscaleDeviceId: deviceId, tailscaleIp: ip } = instance;
    const found = devices.filter(
      (d) => d.id === deviceId || (!!ip && d.addresses?.includes(ip)) || (!!hostname && hostnameMatches(d, hostname)),
    );
    if (deviceId && !found.some((d) => d.id === deviceId) && !gone.devices.has(deviceId)) {
      const recorded = await tailscale.getDevice(deviceId);
      if (recorded) found.push(recorded);
      else gone.devices.add(deviceId);
    }
    return found;
  }

  /**
   * Throws (retryable) while a server or device the guard would call ours is still there; refused
   * ones do not count. Every listing it reads was taken after the deletes above finished.
   */
  private async confirmGone(terms: string[], evidence: ServerEvidence, instance: Instance, hostname: string, gone: Gone): Promise<void> {
    const fleet = this.deps.fleet;
    const deviceEvidence = this.deviceEvidence(instance, hostname);
    const [servers, snapshots, devices] = await Promise.all([
      this.candidateServers(terms, evidence, gone),
      findSnapshots(this.sharedImages(), fleet, { agentId: instance.agentId }),
      this.instanceDevices(instance, hostname, gone),
    ]);
    const left = servers.filter((s) => judgeServer(fleet, s, evidence).ours).map((s) => `server ${s.id}`);
    for (const image of snapshots) left.push(`snapshot ${image.id}`);
    const serversLeft = left.length;
    for (const d of devices) {
      if (judgeDevice(d, deviceEvidence).ours) left.push(`device ${d.id}`);
    }
    if (left.length > 0) {
      throw new CloudApiError({
        api: serversLeft > 0 ? 'hetzner' : 'tailscale',
        status: 0,
        code: 'still_present',
        message: `Still present after deletion: ${left.join(', ')}`,
        retryable: true,
        method: 'GET',
        path: serversLeft > 0 ? '/servers' : '/devices',
      });
    }
  }
}
