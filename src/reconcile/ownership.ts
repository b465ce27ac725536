import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import type { Instance } from '../entities';
import { agentHostname } from '../fleet/hostname';
import type { Ownership, Snapshot } from './types';

/** The hostname the instance's device joins as (lower case), as provision fixed it. */
export function instanceHostname(instance: Instance, snapshot: Snapshot): string | null {
  if (instance.tailscaleHostname) return instance.tailscaleHostname.toLowerCase();
  const agent = snapshot.agents.get(instance.agentId);
  if (agent) return agentHostname(agent.name, agent.id);
  return instance.serverName?.toLowerCase() ?? null;
}

/** A device must carry every configured tag to be judged at all. */
export function carriesTags(tags: readonly string[], d: TailscaleDevice): boolean {
  const own = d.tags ?? [];
  return tags.length > 0 && tags.every((t) => own.includes(t));
}

/** What the live instances of the snapshot claim, minus the ones this pass found dead. */
export function ownership(snapshot: Snapshot, deadInstanceIds: Set<string>): Ownership {
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
    const hostname = instanceHostname(i, snapshot);
    if (hostname) o.hostnames.add(hostname);
    if (i.serverName) o.hostnames.add(i.serverName.toLowerCase());
    if (i.status === 'pending' || i.status === 'provisioning') o.provisioningInstanceIds.add(i.id);
  }
  return o;
}
