import { CloudApiError, WaitTimeoutError } from '../clients/errors';
import type { CreateServerOptions, HetznerImage, HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import type { Agent, Instance } from '../entities';
import { NotFoundError, StateConflictError } from '../errors';
import { tailnetIpv4 } from '../fleet/devices';
import { instanceTerms, JOIN_LABEL, serverLabels, snapshotLabels, type JoinMode } from '../fleet/server-labels';
import type { Logger } from '../lib/logger';
import { mintJobAuthKey, revokeJobAuthKeys } from './auth-keys';
import { buildRejoinUserData, buildWakeUserData } from './cloud-init';
import { waitForAgentDevice } from './enrollment';
import { errorMessage, guarded, move, moveTogether } from './guarded-moves';
import { findLiveInstanceOfAgent, finishTogether, reachedBy, recordedServerIds, recordFailure, requireAgent, requireInstance } from './records';
import { shutdownGuarded } from './guarded-shutdown';
import { deleteInstanceSnapshots, deleteSnapshotImage, findSnapshots } from './snapshots';
import { listWithRecorded, runningServer } from './servers';
import { silentReporter, type StepReporter } from './step-reporter';
import type { DeviceEvidence, GuardContext, ServerEvidence } from '../fleet/ownership-guard';
import type { OperationContext } from './workflow-deps';
import { createPlaced, placementsOf, placeKey, type Placement } from './placement';
import { PlacingWorkflow, recordLanding, recordPlacementRefusal } from './provision.workflow';

/** What a wake did: whether the node came back from the snapshot or had to join the tailnet afresh. */
export interface WakeResult {
  serverId: number;
  deviceId: string;
  /** true: the device did not come back, so the machine joined with a new auth key as a new device. */
  rejoined: boolean;
}

/**
 * Every parameter of a server a wake creates, in one place: the instance's type and location, the
 * snapshot as its image, the fleet's labels (plus how it joins the tailnet), the configured SSH keys
 * and the user data.
 */
export function wakeServerParams(o: {
  instance: Pick<Instance, 'serverName' | 'serverType' | 'location'>;
  hostname: string;
  snapshotImageId: string;
  labels: Record<string, string>;
  sshKeys: string[];
  userData: string;
  defaultLocation: string;
  publicIpv4?: boolean;
}): CreateServerOptions {
  return {
    name: o.instance.serverName ?? o.hostname,
    serverType: o.instance.serverType,
    image: o.snapshotImageId,
    location: o.instance.location ?? o.defaultLocation,
    sshKeys: o.sshKeys.length > 0 ? o.sshKeys : undefined,
    userData: o.userData,
    labels: o.labels,
    ...(o.publicIpv4 === false ? { publicIpv4: false } : {}),
  };
}

/**
 * Hibernate and wake. Hetzner bills a server until it is deleted, powered off or not; a snapshot
 * costs a few percent of that. Hibernate shuts the server down, snapshots its disk, waits for the
 * image and deletes the server; the tailnet device stays (offline), because the node's identity is
 * on the disk and so in the snapshot. Wake creates a server from the snapshot, waits for the same
 * device to come back online, records the new server and deletes the snapshot — or, when the device
 * does not come back, joins the tailnet afresh with a new auth key.
 *
 * Every step may run again after a crash: a snapshot is looked up by its labels before one is made,
 * a server by its labels before one is created, and the ids are recorded right after each create.
 */
export class HibernateWorkflow extends PlacingWorkflow {

  /** The guard and the audit subject of a snapshot delete. */
  private guarded(operation: string, operationId: string | null | undefined, agentId: string, instanceId: string) {
    return { guard: this.guard, ctx: { operation, operationId: operationId ?? null, agentId, instanceId } satisfies GuardContext };
  }

  /** Deletes a server through the ownership guard: it must be labelled for this agent and fleet (and recorded, when given). */
  private async deleteServerGuarded(server: HetznerServer, instance: Instance, operation: string, recorded: boolean): Promise<boolean> {
    const evidence: ServerEvidence = { agentId: instance.agentId, ...(recorded ? { recordedIds: [server.id] } : {}) };
    const ctx: GuardContext = { operation, operationId: null, agentId: instance.agentId, instanceId: instance.id };
    return (await this.guard.deleteServer(server, evidence, ctx)) === 'deleted';
  }

  async hibernate(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const { dataSource: ds, repositories: repos, hetzner } = this.deps;
    const operationId = ctx.operationId ?? null;
    const log = this.deps.logger.child({ agentId, operationId, operation: 'hibernate' });
    const found = await findLiveInstanceOfAgent(repos, agentId);

    if (found?.status === 'hibernated' && (await reachedBy(repos, found.id, 'hibernated', operationId))) {
      await r.step('done', 100, 'already hibernated');
      return;
    }
    if (found?.status === 'running' || found?.status === 'stopped') {
      await r.step('prepare', 5, 'marking the instance as hibernating');
      await move(ds, { entity: 'instance', id: found.id, from: [found.status], to: 'hibernating', reason: `hibernate requested (was ${found.status})`, operationId });
    } else if (found?.status === 'hibernating') {
      log.info('[Lifecycle] Instance already hibernating, resuming');
    } else {
      throw new StateConflictError('No running or stopped instance to hibernate');
    }
    let instance = await requireInstance(repos, found.id);
    const ids = { agentId, instanceId: instance.id };

    try {
      await r.step('find-snapshot', 10, 'looking for a snapshot made by an earlier attempt');
      let image = await this.findSnapshot(instance, log);
      if (!image) {
        const server = instance.serverId ? await hetzner.getServer(Number(instance.serverId)) : null;
        if (!server) {
          throw new StateConflictError(`Instance ${instance.id} has neither a server nor a snapshot; there is nothing to hibernate`);
        }
        await r.step('shutdown', 20, `shutting down server ${server.id}`);
        await shutdownGuarded(this.deps, this.guard, server.id, { operation: 'hibernate', operationId, agentId, instanceId: instance.id });
        await r.step('snapshot', 35, `snapshotting server ${server.id}`);
        ({ image } = await hetzner.createSnapshot(server.id, {
          description: `tailfleet hibernation of ${instance.serverName ?? server.name}`,
          labels: snapshotLabels(this.deps.fleet, ids),
        }));
        // Recorded at once: a crash from here on finds it by id (and by its labels if this write is lost).
        await guarded(() => repos.instances.updateWhile(ids.instanceId, 'hibernating', { snapshotImageId: String(image!.id) }));
        log.info({ imageId: image.id, serverId: server.id }, `[Lifecycle] Snapshot ${image.id} of server ${server.id} started`);
      }

      await r.step('wait-snapshot', 50, `waiting for snapshot ${image.id} to be available`);
      const ready = await hetzner.waitForImageAvailable(image.id, { timeoutMs: this.deps.settings.actionTimeoutMs });
      if (!ready) {
        // Deleted while it was being made: forget it, so the retry snapshots the server (still there) again.
        await guarded(() => repos.instances.updateWhile(ids.instanceId, 'hibernating', { snapshotImageId: null, snapshotSizeGb: null }));
        throw retryable(`Snapshot ${image.id} disappeared before it was available`, `/images/${image.id}`);
      }
      await guarded(() =>
        repos.instances.updateWhile(ids.instanceId, 'hibernating', { snapshotImageId: String(ready.id), snapshotSizeGb: ready.image_size ?? ready.disk_size }),
      );

      // The snapshot exists, so a server already gone is fine from here on.
      await r.step('delete-server', 75, 'deleting the server');
      instance = await requireInstance(repos, ids.instanceId);
      await this.deleteInstanceServers(instance, log);
    } catch (err) {
      await recordFailure(repos, ids.instanceId, 'hibernating', 'Hibernate', err, log);
      await this.revertUntaken(ids, operationId, errorMessage(err), log).catch((revertErr: unknown) =>
        log.warn({ err: revertErr }, '[Lifecycle] Could not put the instance back after a failed hibernate'),
      );
      throw err;
    }

    await r.step('finish', 90, 'marking the instance as hibernated');
    await finishTogether(this.deps, ctx, [
      {
        entity: 'instance',
        id: ids.instanceId,
        from: ['hibernating'],
        to: 'hibernated',
        reason: `server deleted; kept as snapshot ${instance.snapshotImageId}`,
        operationId,
        patch: { serverId: null, serverIp: null, stoppedAt: new Date(), error: null },
      },
      { entity: 'agent', id: agentId, from: ['active', 'paused'], to: 'hibernated', reason: 'instance hibernated', operationId, allowSame: true },
    ], { instanceId: ids.instanceId, status: 'hibernated', lastStep: 'done' });
    await r.step('done', 100, 'hibernated');
    log.info({ imageId: instance.snapshotImageId }, `[Lifecycle] Agent ${agentId} hibernated`);
  }

  async wake(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<WakeResult | undefined> {
    const { dataSource: ds, repositories: repos } = this.deps;
    const operationId = ctx.operationId ?? null;
    const log = this.deps.logger.child({ agentId, operationId, operation: 'wake' });
    const found = await findLiveInstanceOfAgent(repos, agentId);

    if (found?.status === 'running' && (await reachedBy(repos, found.id, 'running', operationId))) {
      await r.step('done', 100, 'already awake');
      return undefined;
    }
    if (found?.status === 'hibernated') {
      await r.step('prepare', 5, 'marking the instance as waking');
      await move(ds, { entity: 'instance', id: found.id, from: ['hibernated'], to: 'waking', reason: 'wake requested', operationId });
    } else if (found?.status === 'waking') {
      log.info('[Lifecycle] Instance already waking, resuming');
    } else {
      throw new StateConflictError('No hibernated instance to wake');
    }
    const instanceId = found.id;
    const agent = await requireAgent(repos, agentId);
    let result: WakeResult;

    try {
      result = await this.bringBack(agent, instanceId, r, log);
      await r.step('delete-snapshot', 85, 'deleting the snapshot');
      const instance = await requireInstance(repos, instanceId);
      await deleteInstanceSnapshots(this.deps, instance, { agentId, instanceId }, this.guarded('wake', ctx.operationId, agentId, instanceId));
    } catch (err) {
      await recordFailure(repos, instanceId, 'waking', 'Wake', err, log);
      await this.revertUnwoken({ agentId, instanceId }, operationId, errorMessage(err), log).catch((revertErr: unknown) =>
        log.warn({ err: revertErr }, '[Lifecycle] Could not put the instance back after a failed wake'),
      );
      throw err;
    }

    await r.step('finish', 90, 'marking the instance as running');
    // The step the operation ends on says which way the machine came back.
    const lastStep = result.rejoined ? 'rejoined' : 'done';
    await finishTogether(this.deps, ctx, [
      {
        entity: 'instance',
        id: instanceId,
        from: ['waking'],
        to: 'running',
        reason: result.rejoined
          ? `woke on server ${result.serverId}; the device did not come back, so it joined the tailnet again as device ${result.deviceId}`
          : `woke on server ${result.serverId} as the same tailnet device ${result.deviceId}`,
        operationId,
        patch: { startedAt: new Date(), stoppedAt: null, error: null, snapshotImageId: null, snapshotSizeGb: null },
      },
      { entity: 'agent', id: agentId, from: ['hibernated'], to: 'active', reason: 'instance woke', operationId, allowSame: true },
    ], { instanceId, status: 'running', lastStep });
    await r.step(lastStep, 100, result.rejoined ? `awake; joined the tailnet again as device ${result.deviceId}` : 'awake');
    log.info(result, `[Lifecycle] Agent ${agentId} woke${result.rejoined ? ' (joined the tailnet again)' : ''}`);
    return result;
  }

  // ---------------------------------------------------------------------------------------------
  // wake, step by step

  /** Server up and device online, from wherever an earlier run stopped. */
  private async bringBack(agent: Agent, instanceId: string, r: StepReporter, log: Logger): Promise<WakeResult> {
    const { repositories: repos, tailscale, settings } = this.deps;
    for (;;) {
      const instance = await requireInstance(repos, instanceId);
      const hostname = this.deps.fleet.hostnameOf(instance, agent);
      // No device recorded: the node did not come back (or never existed), so this machine joins afresh.
      const mode: JoinMode = instance.tailscaleDeviceId ? 'snapshot' : 'auth-key';

      await r.step('find-server', 10, 'looking for a server made by an earlier attempt');
      let server = await this.findWakeServer(instance, mode, log);
      if (!server) {
        if (!instance.snapshotImageId) {
          throw new StateConflictError(`Instance ${instanceId} has neither a server nor a snapshot to wake from`);
        }
        await r.step('create-server', 20, mode === 'snapshot' ? 'creating a server from the snapshot' : 'creating a server that joins the tailnet again');
        server = await this.createWakeServer(agent, instance, hostname, mode, log);
      }

      await r.step('wait-server', 40, `waiting for server ${server.id} to run`);
      server = await this.waitForServerRunning(server.id);
      await guarded(() => repos.instances.updateWhile(instanceId, 'waking', { serverIp: server!.public_net.ipv4?.ip ?? null }));

      if (mode === 'auth-key') {
        await r.step('wait-enrollment', 60, `waiting for ${hostname} to join the tailnet`);
        const ctx: GuardContext = { operation: 'wake', operationId: null, agentId: agent.id, instanceId };
        const device = await waitForAgentDevice({ ...this.deps, guard: this.guard }, hostname, ctx, log);
        await this.recordDevice(instanceId, device);
        const job = await repos.provisioningJobs.findByInstance(instanceId);
        if (job) await revokeJobAuthKeys({ ...this.deps, guard: this.guard }, { provisioningJobId: job.id, hostname }, ctx, log);
        return { serverId: server.id, deviceId: device.id, rejoined: true };
      }

      const deviceId = instance.tailscaleDeviceId!;
      await r.step('wait-device', 60, `waiting for tailnet device ${deviceId} to come back online`);
      let device: TailscaleDevice | null;
      try {
        device = await tailscale.waitForDeviceOnline(deviceId, { timeoutMs: settings.enrollmentTimeoutMs });
      } catch (err) {
        if (!(err instanceof WaitTimeoutError)) throw err;
        device = null;
      }
      if (device) {
        await this.recordDevice(instanceId, device);
        return { serverId: server.id, deviceId, rejoined: false };
      }
      await r.step('rejoin', 65, `device ${deviceId} did not come back; joining the tailnet again`);
      await this.startOver(instance, server.id, log);
    }
  }

  /**
   * The fallback: the old device is removed, the server that could not bring it back is deleted, and
   * the instance forgets both, so the next round creates a server that joins with a new auth key.
   * The device is forgotten first: a crash after that resumes in the fallback, never back here.
   */
  private async startOver(instance: Instance, serverId: number, log: Logger): Promise<void> {
    const { hetzner, tailscale, repositories: repos } = this.deps;
    const deviceId = instance.tailscaleDeviceId!;
    log.warn({ deviceId, serverId }, `[Lifecycle] Device ${deviceId} did not come back; falling back to a fresh join`);
    await guarded(() =>
      repos.instances.replaceDevice(
        instance,
        { tailscaleDeviceId: null, tailscaleIp: null, error: null },
        `wake: device ${deviceId} did not come back online; joining the tailnet again with a new auth key`,
      ),
    );
    const ctx: GuardContext = { operation: 'wake', operationId: null, agentId: instance.agentId, instanceId: instance.id };
    const device = await tailscale.getDevice(deviceId);
    const evidence: DeviceEvidence = { recordedIds: [deviceId], hostname: instance.tailscaleHostname, tags: tailscale.tags, ip: instance.tailscaleIp };
    if (device && (await this.guard.deleteDevice(device, evidence, ctx)) === 'deleted') log.info({ deviceId }, `[Tailscale] Old device ${deviceId} removed`);
    const server = await hetzner.getServer(serverId);
    if (server) await this.deleteServerGuarded(server, instance, 'wake', true);
    await guarded(() => repos.instances.updateWhile(instance.id, 'waking', { serverId: null, serverIp: null }));
  }

  /**
   * The server an earlier attempt made: the recorded one and those with the instance's labels. A
   * fresh join keeps only a server made to join afresh (one made from the snapshot alone is what the
   * fallback is replacing, left by a crash half-way through it); of several, the oldest is kept and
   * the others deleted.
   */
  private async findWakeServer(instance: Instance, mode: JoinMode, log: Logger): Promise<HetznerServer | null> {
    const repos = this.deps.repositories;
    const byId = await this.instanceServers(instance);
    let keep: HetznerServer | null = null;
    for (const server of [...byId.values()].sort((a, b) => a.id - b.id)) {
      const fits = mode === 'snapshot' || server.labels[JOIN_LABEL] === 'auth-key';
      if (!keep && fits) {
        keep = server;
        continue;
      }
      log.warn({ serverId: server.id }, `[Lifecycle] Deleting server ${server.id} left by an earlier wake attempt`);
      await this.deleteServerGuarded(server, instance, 'wake', String(server.id) === String(instance.serverId));
    }
    if (String(keep?.id ?? null) !== String(instance.serverId)) {
      await guarded(() => repos.instances.updateWhile(instance.id, 'waking', { serverId: keep ? String(keep.id) : null, serverIp: null }));
      if (keep) log.info({ serverId: keep.id }, `[Lifecycle] Found server ${keep.id} by its labels, resuming`);
    }
    return keep;
  }

  private async createWakeServer(agent: Agent, instance: Instance, hostname: string, mode: JoinMode, log: Logger): Promise<HetznerServer> {
    const { hetzner, repositories: repos, settings, fleet } = this.deps;
    const job = await repos.provisioningJobs.findByInstance(instance.id);
    if (!job) throw new NotFoundError(`Instance ${instance.id} has no provisioning job`);
    let userData = buildWakeUserData();
    if (mode === 'auth-key') {
      const ctx: GuardContext = { operation: 'wake', operationId: null, agentId: agent.id, instanceId: instance.id };
      const key = await mintJobAuthKey({ ...this.deps, guard: this.guard }, { provisioningJobId: job.id, hostname }, ctx, log);
      userData = buildRejoinUserData({ authKey: key.key, hostname });
    }
    const params = wakeServerParams({
      instance,
      hostname,
      snapshotImageId: instance.snapshotImageId!,
      labels: { ...serverLabels(fleet, { agentId: agent.id, provisioningJobId: job.id, instanceId: instance.id }), [JOIN_LABEL]: mode },
      sshKeys: settings.sshKeys,
      userData,
      defaultLocation: settings.location,
      publicIpv4: agent.spec?.publicIpv4 ?? settings.publicIpv4 ?? true,
    });
    // The snapshot is the project's: the server comes back in the same project, at the instance's
    // place or, when that is refused, the next of the agent's places.
    const project = this.placement.projects.current();
    const here: Placement = { location: instance.location ?? settings.location, serverType: instance.serverType };
    const places = [here, ...placementsOf(agent.spec, settings).filter((p) => placeKey(p) !== placeKey(here))];
    const at = { instance, status: 'waking', operationId: null };
    let created;
    try {
      const placed = await createPlaced(this.placement, {
        placements: places,
        projects: [project],
        choose: (name, place) => this.choosePlacement(instance.id, { project: name, ...place }),
        create: (place) => hetzner.createServer({ ...params, location: place.location, serverType: place.serverType }),
        leftBehind: () => fleet.listServers(hetzner, instanceTerms({ agentId: instance.agentId, instanceId: instance.id })),
        refused: (refusal, next) => recordPlacementRefusal(this.deps, at, refusal, next),
      });
      if (placed.found) return placed.found;
      if (placed.refusals.length > 0) await recordLanding(this.deps, at, placed);
      created = placed.created!;
    } catch (err) {
      if (err instanceof CloudApiError && err.code === 'uniqueness_error') {
        // The name is the hostname: a parallel attempt most likely created it first.
        const theirs = await this.findWakeServer(await requireInstance(repos, instance.id), mode, log);
        if (theirs) return theirs;
      }
      throw err;
    }
    await guarded(() => repos.instances.updateWhile(instance.id, 'waking', { serverId: String(created.server.id) }));
    log.info({ serverId: created.server.id, mode }, `[Lifecycle] Server ${created.server.id} created from snapshot ${instance.snapshotImageId}`);
    await hetzner.waitForActions([created.action.id, ...created.nextActions.map((a) => a.id)], { timeoutMs: settings.actionTimeoutMs });
    return created.server;
  }

  /** The instance's servers by id: those labelled for it and the recorded one (if it still exists). */
  private async instanceServers(instance: Instance): Promise<Map<number, HetznerServer>> {
    const servers = await listWithRecorded(this.deps, instanceTerms({ agentId: instance.agentId, instanceId: instance.id }), recordedServerIds(instance));
    return new Map(servers.map((s) => [s.id, s]));
  }

  private async waitForServerRunning(serverId: number): Promise<HetznerServer> {
    const server = await runningServer(this.deps.hetzner, serverId, this.deps.settings.actionTimeoutMs);
    if (!server) throw retryable(`Server ${serverId} disappeared while waking`, `/servers/${serverId}`);
    return server;
  }

  private async recordDevice(instanceId: string, device: TailscaleDevice): Promise<void> {
    await guarded(() =>
      this.deps.repositories.instances.updateWhile(instanceId, 'waking', { tailscaleDeviceId: device.id, tailscaleIp: tailnetIpv4(device) }),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // hibernate, step by step

  /**
   * The instance's snapshot: the recorded id first, else its labels (a create whose answer or whose
   * write was lost). Of several (two attempts at once), the oldest is kept and the others deleted.
   */
  private async findSnapshot(instance: Instance, log: Logger): Promise<HetznerImage | null> {
    const { hetzner, repositories: repos } = this.deps;
    const agentId = instance.agentId;
    if (instance.snapshotImageId) {
      const image = await hetzner.getImage(Number(instance.snapshotImageId));
      if (image && image.status !== 'unavailable') return image;
    }
    const [image, ...extra] = (await findSnapshots(hetzner, this.deps.fleet, { agentId, instanceId: instance.id })).filter(
      (i) => i.status !== 'unavailable',
    );
    for (const other of extra) {
      log.warn({ imageId: other.id }, `[Lifecycle] Deleting duplicate snapshot ${other.id}`);
      await deleteSnapshotImage(this.deps, { imageId: other.id, agentId }, this.guarded('hibernate', null, agentId, instance.id));
    }
    if (image && String(image.id) !== instance.snapshotImageId) {
      await guarded(() => repos.instances.updateWhile(instance.id, 'hibernating', { snapshotImageId: String(image.id) }));
      log.info({ imageId: image.id }, `[Lifecycle] Found snapshot ${image.id} by its labels, resuming`);
    }
    return image ?? null;
  }

  /**
   * A hibernate attempt that failed before any snapshot existed took nothing away: the server is there
   * as it was (off after the shutdown, or still running). The instance goes back to what the server
   * is, with its agent, so the state never claims a hibernation under way that nothing is doing; a
   * retry (or a new request) starts again from there. Once a snapshot exists, hibernation only goes
   * forward.
   */
  private async revertUntaken(ids: { agentId: string; instanceId: string }, operationId: string | null, error: string, log: Logger): Promise<void> {
    const { hetzner, repositories: repos, dataSource: ds } = this.deps;
    const instance = await requireInstance(repos, ids.instanceId);
    if (instance.status !== 'hibernating' || instance.snapshotImageId || !instance.serverId) return;
    if ((await findSnapshots(hetzner, this.deps.fleet, ids)).length > 0) return;
    const server = await hetzner.getServer(Number(instance.serverId));
    if (!server) return;
    const to = server.status === 'running' ? 'running' : 'stopped';
    await moveTogether(ds, [
      {
        entity: 'instance',
        id: ids.instanceId,
        from: ['hibernating'],
        to,
        reason: `hibernate failed before a snapshot existed (${error}); server ${server.id} is ${server.status}`,
        operationId,
      },
      {
        entity: 'agent',
        id: ids.agentId,
        from: [to === 'running' ? 'paused' : 'active'],
        to: to === 'running' ? 'active' : 'paused',
        allowSame: true,
        reason: `instance ${to}`,
        operationId,
      },
    ]);
    log.warn({ serverId: server.id, to }, `[Lifecycle] Hibernate failed before a snapshot existed; instance back to ${to}`);
  }

  /**
   * A wake attempt that failed while no server existed for the instance (the create was refused, or
   * never reached) leaves the agent as it was: hibernated on its snapshot, ready to be woken again,
   * instead of `waking` with nothing under way when the last attempt fails. With a server (or a
   * create whose answer was lost, found by its labels) the instance stays `waking` for the next
   * attempt to resume.
   */
  private async revertUnwoken(ids: { agentId: string; instanceId: string }, operationId: string | null, error: string, log: Logger): Promise<void> {
    const instance = await requireInstance(this.deps.repositories, ids.instanceId);
    if (instance.status !== 'waking' || !instance.snapshotImageId || instance.serverId) return;
    if ((await this.instanceServers(instance)).size > 0) return;
    await move(this.deps.dataSource, {
      entity: 'instance',
      id: ids.instanceId,
      from: ['waking'],
      to: 'hibernated',
      reason: `wake failed before any server existed (${error}); still hibernated on snapshot ${instance.snapshotImageId}`,
      operationId,
    });
    log.warn({ imageId: instance.snapshotImageId }, '[Lifecycle] Wake failed before any server existed; instance back to hibernated');
  }

  /** The recorded server and any other server labelled for this instance. */
  private async deleteInstanceServers(instance: Instance, log: Logger): Promise<void> {
    for (const server of (await this.instanceServers(instance)).values()) {
      if (await this.deleteServerGuarded(server, instance, 'hibernate', String(server.id) === String(instance.serverId))) {
        log.info({ serverId: server.id }, `[Lifecycle] Server ${server.id} deleted after its snapshot`);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------

}

function retryable(message: string, path: string): CloudApiError {
  return new CloudApiError({ api: 'hetzner', status: 0, code: 'gone', message, retryable: true, method: 'GET', path });
}
