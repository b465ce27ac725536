import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { transitionGroup, type TransitionRequest } from '../db/transitions';
import type { Instance } from '../entities';
import { StateConflictError } from '../errors';
import { tailnetIpv4 } from '../fleet/devices';
import { instanceHostname } from './ownership';
import { liveOperation } from './queue-state';
import type { DriftFinding, DriftKind, PassContext, Snapshot } from './types';

/**
 * Drift: a running or stopped instance whose server was powered off, on or deleted, or whose tailnet
 * device was removed or replaced, behind tailfleet's back. The recorded state is corrected by guarded
 * transitions from the status seen in the snapshot, unless an operation for the agent is in flight.
 */

/** Server state drift for a running or stopped instance. Returns null when the server agrees. */
export async function checkServer(
  ctx: PassContext,
  instance: Instance,
  servers: Map<string, HetznerServer>,
  snapshot: Snapshot,
  deadInstanceIds: Set<string>,
): Promise<DriftFinding | null> {
  const { deps } = ctx;
  if (!instance.serverId) return null;
  let server: HetznerServer | null | undefined = servers.get(instance.serverId);
  let unlabelled = false;
  if (!server) {
    // Absent from the listing: deleted, or its label was removed, or it moved between pages while
    // we listed. One read settles it before anything is recorded.
    server = await deps.hetzner.getServer(Number(instance.serverId));
    unlabelled = server !== null;
  }
  let kind: DriftKind;
  if (server === null) kind = 'server_gone';
  else if (instance.status === 'running' && server.status === 'off') kind = 'server_off';
  else if (instance.status === 'stopped' && server.status === 'running') kind = 'server_running';
  else return null;

  const base = {
    kind,
    instanceId: instance.id,
    agentId: instance.agentId,
    status: instance.status,
    serverId: instance.serverId,
    deviceId: instance.tailscaleDeviceId,
  };
  const busy = await liveOperation(deps.queues, instance.agentId, snapshot);
  const what =
    kind === 'server_gone'
      ? `Server ${instance.serverId} no longer exists at Hetzner (deleted outside tailfleet)`
      : kind === 'server_off'
        ? `Server ${instance.serverId} is off but the instance was running (powered off outside tailfleet)`
        : `Server ${instance.serverId} is running but the instance was stopped (powered on outside tailfleet)`;
  const note = unlabelled ? '; the server no longer carries the managed-by label' : '';
  if (busy) {
    // The operation in flight will meet the real server state itself; correcting under it would
    // turn its next guarded step into a conflict.
    return { ...base, action: 'deferred', detail: `${what}${note}; left to ${busy.type} operation ${busy.id}` };
  }
  try {
    await repairServerDrift(ctx, instance, kind, what, snapshot);
  } catch (err) {
    if (err instanceof StateConflictError) {
      // An operation moved the instance after the snapshot; its view is newer than ours.
      return { ...base, action: 'deferred', detail: `${what}${note}; not recorded: ${err.message}` };
    }
    return { ...base, action: 'error', detail: `${what}${note}; repair failed: ${(err as Error).message}` };
  }
  if (kind === 'server_gone') deadInstanceIds.add(instance.id);
  deps.metrics?.reconcileRepairs.inc({ kind });
  return { ...base, action: 'repaired', detail: `${what}${note}` };
}

async function repairServerDrift(ctx: PassContext, instance: Instance, kind: DriftKind, what: string, snapshot: Snapshot) {
  const reason = `reconcile: ${what}`;
  const agent = snapshot.agents.get(instance.agentId);
  const now = new Date(ctx.now());
  const moves: TransitionRequest<any>[] = [];
  if (kind === 'server_off') {
    moves.push(
      { entity: 'instance', id: instance.id, from: ['running'], to: 'stopping', reason },
      { entity: 'instance', id: instance.id, from: ['stopping'], to: 'stopped', reason, patch: { stoppedAt: now } },
    );
    if (agent?.status === 'active') moves.push({ entity: 'agent', id: agent.id, from: ['active'], to: 'paused', reason });
  } else if (kind === 'server_running') {
    moves.push(
      { entity: 'instance', id: instance.id, from: ['stopped'], to: 'starting', reason },
      {
        entity: 'instance',
        id: instance.id,
        from: ['starting'],
        to: 'running',
        reason,
        patch: { startedAt: now, stoppedAt: null },
      },
    );
    if (agent?.status === 'paused') moves.push({ entity: 'agent', id: agent.id, from: ['paused'], to: 'active', reason });
  } else {
    moves.push({
      entity: 'instance',
      id: instance.id,
      from: [instance.status],
      to: 'failed',
      reason,
      patch: { error: `${what}; found by reconcile` },
    });
    if (agent && (agent.status === 'active' || agent.status === 'paused')) {
      moves.push({ entity: 'agent', id: agent.id, from: [agent.status], to: 'error', reason });
    }
  }
  await transitionGroup(ctx.deps.dataSource, moves);
}

/** Tailnet device drift for a running or stopped instance whose server agrees. */
export async function checkDevice(
  ctx: PassContext,
  instance: Instance,
  devicesById: Map<string, TailscaleDevice>,
  unclaimedByHostname: Map<string, TailscaleDevice>,
  snapshot: Snapshot,
): Promise<DriftFinding | null> {
  const { deps } = ctx;
  if (instance.tailscaleDeviceId && devicesById.has(instance.tailscaleDeviceId)) return null;
  const hostname = instanceHostname(deps.fleet, instance, snapshot);
  const replacement = hostname ? unclaimedByHostname.get(hostname) : undefined;
  if (!instance.tailscaleDeviceId && !replacement) return null;

  const base = {
    instanceId: instance.id,
    agentId: instance.agentId,
    status: instance.status,
    serverId: instance.serverId,
    deviceId: instance.tailscaleDeviceId,
  };
  if (!replacement) {
    const still = await deps.tailscale.getDevice(instance.tailscaleDeviceId!);
    if (still) return null;
  }
  const busy = await liveOperation(deps.queues, instance.agentId, snapshot);
  const what = replacement
    ? instance.tailscaleDeviceId
      ? `Tailnet device ${instance.tailscaleDeviceId} was replaced by ${replacement.id} (${hostname} re-joined the tailnet)`
      : `${hostname} re-joined the tailnet as device ${replacement.id}`
    : `Tailnet device ${instance.tailscaleDeviceId} was removed from the tailnet; the machine is unreachable over the tailnet until it joins again`;
  const kind: DriftKind = replacement ? 'device_replaced' : 'device_gone';
  if (busy) return { ...base, kind, action: 'deferred', detail: `${what}; left to ${busy.type} operation ${busy.id}` };

  const patch = replacement
    ? { tailscaleDeviceId: replacement.id, tailscaleIp: tailnetIpv4(replacement), error: null }
    : { tailscaleDeviceId: null, tailscaleIp: null, error: `${what}; found by reconcile` };
  try {
    await deps.repositories.instances.replaceDevice(instance, patch, `reconcile: ${what}`);
  } catch (err) {
    if (err instanceof StateConflictError) {
      return { ...base, kind, action: 'deferred', detail: `${what}; not recorded: ${err.message}` };
    }
    return { ...base, kind, action: 'error', detail: `${what}; repair failed: ${(err as Error).message}` };
  }
  if (replacement) unclaimedByHostname.delete(hostname!);
  deps.metrics?.reconcileRepairs.inc({ kind });
  return { ...base, kind, action: 'repaired', detail: what };
}
