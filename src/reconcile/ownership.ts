import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import type { Instance } from '../entities';
import type { Fleet } from '../fleet/fleet';
import type { Ownership, PassContext, Snapshot } from './types';

/** The hostname the instance's device joins as (lower case), as provision fixed it or will. */
export function instanceHostname(fleet: Fleet, instance: Instance, snapshot: Snapshot): string | null {
  if (instance.tailscaleHostname) return instance.tailscaleHostname.toLowerCase();
  const agent = snapshot.agents.get(instance.agentId);
  if (agent) return fleet.hostname(agent.name, agent.id);
  return instance.serverName?.toLowerCase() ?? null;
}

/** A device must carry every configured tag to be judged at all. */
export function carriesTags(tags: readonly string[], d: TailscaleDevice): boolean {
  const own = d.tags ?? [];
  return tags.length > 0 && tags.every((t) => own.includes(t));
}

/** A device this pass may judge at all: it carries every configured tag and this fleet's hostname mark. */
export function judgesDevice(ctx: PassContext, d: TailscaleDevice): boolean {
  return carriesTags(ctx.settings.tags, d) && ctx.deps.fleet.ownsDevice(d);
}

/** What the live instances of the snapshot claim, minus the ones this pass found dead. */
export function ownership(fleet: Fleet, snapshot: Snapshot, deadInstanceIds: Set<string>): Ownership {
  const o: Ownership = {
    serverIds: new Set(),
    deviceIds: new Set(),
    ips: new Set(),
    hostnames: new Set(),
    provisioningInstanceIds: new Set(),
  };
  for (const i of snapshot.instances) {
    if (deadInstanceIds.has(i.id)) continue;
    if (i.serverId) o.serverIds.add(i.serverId);
    if (i.tailscaleDeviceId) o.deviceIds.add(i.tailscaleDeviceId);
    if (i.tailscaleIp) o.ips.add(i.tailscaleIp);
    const hostname = instanceHostname(fleet, i, snapshot);
    if (hostname) o.hostnames.add(hostname);
    if (i.serverName) o.hostnames.add(i.serverName.toLowerCase());
    if (i.status === 'pending' || i.status === 'provisioning') o.provisioningInstanceIds.add(i.id);
  }
  return o;
}
