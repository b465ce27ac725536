import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { Fleet } from '../fleet/fleet';

/**
 * This fleet's servers matching the label terms, and the recorded ones: read by id when the listing
 * does not show them (their labels may have been changed), left out when they no longer exist.
 * `shared`: the listing is one concurrent callers share (taken after this call; see
 * HetznerClient.listServersShared). `gone`: ids known not to exist any more (deleted by this run,
 * or read as gone): not read again; a recorded id read as gone is added to it.
 */
export async function listWithRecorded(
  deps: { hetzner: Pick<HetznerClient, 'getServer' | 'listServers' | 'listServersShared'>; fleet: Fleet },
  terms: string[],
  recordedIds: readonly (number | string)[],
  o: { shared?: boolean; gone?: Set<string> } = {},
): Promise<HetznerServer[]> {
  const found = await deps.fleet.listServers(deps.hetzner, terms, { shared: o.shared });
  for (const id of recordedIds) {
    if (found.some((s) => String(s.id) === String(id)) || o.gone?.has(String(id))) continue;
    const server = await deps.hetzner.getServer(Number(id));
    if (server) found.push(server);
    else o.gone?.add(String(id));
  }
  return found;
}

/**
 * The server once it is running, powered on first when it is off; null when it no longer exists.
 * Its reads are the client's shared ones: many provisions finishing together cost a few listings.
 */
export async function runningServer(
  hetzner: Pick<HetznerClient, 'readServer' | 'powerOnServer' | 'waitForServerStatus'>,
  serverId: number,
  timeoutMs: number,
  onPowerOn: () => void = () => {},
): Promise<HetznerServer | null> {
  let server = await hetzner.readServer(serverId);
  if (server?.status === 'off') {
    onPowerOn();
    await hetzner.powerOnServer(serverId);
    server = await hetzner.readServer(serverId);
  }
  if (server && server.status !== 'running') server = await hetzner.waitForServerStatus(serverId, 'running', { timeoutMs });
  return server;
}
