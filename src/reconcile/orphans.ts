import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { isAgentHostname, type DeviceEvidence, type GuardOutcome } from '../fleet/ownership-guard';
import { AGENT_LABEL, INSTANCE_LABEL, JOB_LABEL, MANAGED_LABEL } from '../fleet/server-labels';
import { errorMessage } from '../errors';
import type { Logger } from '../lib/logger';
import { judgesDevice } from './ownership';
import type { OrphanDeviceFinding, OrphanServerFinding, Ownership, PassContext, ReconcileReport } from './types';

/**
 * Orphans: labelled servers and tagged devices that no live instance owns and no provision in
 * flight vouches for, older than the grace period. Reported, and deleted when configured to.
 */

const DELETE_CONCURRENCY = 4;

export function findOrphans(
  ctx: PassContext,
  servers: Map<string, HetznerServer>,
  devices: TailscaleDevice[],
  own: Ownership,
  inFlightPjIds: Set<string>,
  previous: ReconcileReport | null,
) {
  const now = ctx.now();
  const graceMs = ctx.settings.graceSeconds * 1000;
  const firstSeen = new Map<string, string>();
  for (const o of previous?.orphanServers ?? []) firstSeen.set(`s:${o.serverId}`, o.firstSeenAt);
  for (const o of previous?.orphanDevices ?? []) firstSeen.set(`d:${o.deviceId}`, o.firstSeenAt);
  const nowIso = new Date(now).toISOString();
  let withinGrace = 0;
  let inFlight = 0;

  const orphanServers: OrphanServerFinding[] = [];
  // Names of labelled servers that are not orphans: a device with that hostname goes with its server.
  const ownedNames = new Set<string>();
  const inFlightNames = new Set<string>();
  const youngNames = new Set<string>();
  for (const [id, s] of servers) {
    const name = s.name.toLowerCase();
    if (own.serverIds.has(id)) {
      ownedNames.add(name);
      continue;
    }
    const pjId = s.labels[JOB_LABEL] ?? null;
    const instanceId = s.labels[INSTANCE_LABEL];
    // A provision creates the server before it records the id: its job (or instance) vouches for it.
    if ((pjId && inFlightPjIds.has(pjId)) || (instanceId && own.provisioningInstanceIds.has(instanceId))) {
      inFlightNames.add(name);
      inFlight++;
      continue;
    }
    const ageMs = now - Date.parse(s.created);
    if (!(ageMs >= graceMs)) {
      youngNames.add(name);
      withinGrace++;
      continue;
    }
    orphanServers.push({
      serverId: id,
      name: s.name,
      status: s.status,
      created: s.created,
      ageSeconds: Math.round(ageMs / 1000),
      agentId: s.labels[AGENT_LABEL] ?? null,
      provisioningJobId: pjId,
      firstSeenAt: firstSeen.get(`s:${id}`) ?? nowIso,
      action: 'reported',
    });
  }

  const orphanDevices: OrphanDeviceFinding[] = [];
  for (const d of devices) {
    if (!judgesDevice(ctx, d)) continue;
    const hostname = (d.hostname ?? '').toLowerCase();
    if (own.deviceIds.has(d.id) || (d.addresses ?? []).some((a) => own.ips.has(a))) continue;
    if (own.hostnames.has(hostname) || ownedNames.has(hostname)) continue;
    if (inFlightNames.has(hostname)) {
      inFlight++;
      continue;
    }
    const ageMs = now - Date.parse(d.created);
    if (!(ageMs >= graceMs) || youngNames.has(hostname)) {
      withinGrace++;
      continue;
    }
    orphanDevices.push({
      deviceId: d.id,
      hostname: d.hostname,
      addresses: d.addresses ?? [],
      created: d.created,
      ageSeconds: Math.round(ageMs / 1000),
      firstSeenAt: firstSeen.get(`d:${d.id}`) ?? nowIso,
      action: 'reported',
    });
  }
  return { orphanServers, orphanDevices, withinGrace, inFlight };
}

/** What the pass saw, for the guard's second fact on orphan devices. */
export interface OrphanEvidence {
  operationId: string | null;
  /** The listed devices, by id. */
  devices: Map<string, TailscaleDevice>;
  /** This fleet's servers of the pass: a server tailfleet made is named after its agent's hostname. */
  servers: Map<string, HetznerServer>;
  /** Runs a server's calls in the Hetzner project it was listed in (default: as they are). */
  inProjectOf?: <T>(serverId: string, fn: () => Promise<T>) => Promise<T>;
}

export async function deleteOrphans(
  ctx: PassContext,
  servers: OrphanServerFinding[],
  devices: OrphanDeviceFinding[],
  errors: string[],
  log: Logger,
  seen: OrphanEvidence,
): Promise<void> {
  const { deps, settings } = ctx;
  const total = servers.length + devices.length;
  if (total > settings.maxDeletesPerPass) {
    const message = `${total} orphans exceed the limit of ${settings.maxDeletesPerPass} deletions per pass; nothing deleted (check that tailfleet uses the right database and project)`;
    errors.push(message);
    log.error({ servers: servers.length, devices: devices.length }, `[Reconcile] ${message}`);
    for (const o of [...servers, ...devices]) {
      o.action = 'kept';
      o.detail = 'deletion limit exceeded';
    }
    return;
  }
  const deleteServer = async (o: OrphanServerFinding): Promise<OrphanStep> => {
    // The snapshot may be a few seconds old: ask the database once more right before deleting.
    const owner = await serverOwner(ctx, o);
    if (owner) return { kept: owner };
    // The label is the licence to delete: read the server once more in case someone took it off.
    const current = await deps.hetzner.getServer(Number(o.serverId));
    if (!current) return 'vanished';
    if (current.labels?.[MANAGED_LABEL.key] !== MANAGED_LABEL.value) return { kept: 'no longer carries the managed-by label' };
    if (!deps.fleet.ownsServer(current)) return { kept: `no longer carries the label of fleet ${deps.fleet.name}` };
    const agentId = current.labels?.[AGENT_LABEL] ?? null;
    return ctx.guard.deleteServer(current, {}, { operation: 'reconcile', operationId: seen.operationId, agentId });
  };
  const deleteDevice = async (o: OrphanDeviceFinding): Promise<OrphanStep> => {
    const owner = await deviceOwner(ctx, o);
    if (owner) return { kept: owner };
    const device = seen.devices.get(o.deviceId);
    if (!device) return 'vanished';
    return ctx.guard.deleteDevice(device, orphanDeviceEvidence(ctx, device, seen), { operation: 'reconcile', operationId: seen.operationId });
  };

  const inProject = seen.inProjectOf ?? ((_id, fn) => fn());
  await mapLimit(servers, DELETE_CONCURRENCY, async (o) => {
    const done = await settleOrphan(o, `server ${o.serverId}`, errors, () => inProject(o.serverId, () => deleteServer(o)));
    if (done === 'deleted') deps.metrics?.reconcileRepairs.inc({ kind: 'orphan_server_deleted' });
    if (done) log.warn({ serverId: o.serverId, name: o.name }, `[Reconcile] Orphan server ${o.serverId} deleted`);
  });
  await mapLimit(devices, DELETE_CONCURRENCY, async (o) => {
    const done = await settleOrphan(o, `device ${o.deviceId}`, errors, () => deleteDevice(o));
    if (done === 'deleted') deps.metrics?.reconcileRepairs.inc({ kind: 'orphan_device_deleted' });
    if (done) log.warn({ deviceId: o.deviceId, hostname: o.hostname }, `[Reconcile] Orphan device ${o.deviceId} deleted`);
  });
}

/** How an orphan's delete went, short of an error: a reason to keep it, gone before it was read again, or what the guard did. */
type OrphanStep = { kept: string } | 'vanished' | GuardOutcome;

/**
 * Runs one orphan's delete and writes how it ended on the finding. Returns what the guard did when
 * it allowed the delete ('deleted', or 'already_gone' when the cloud no longer had it), else nothing.
 */
async function settleOrphan(
  o: OrphanServerFinding | OrphanDeviceFinding,
  what: string,
  errors: string[],
  attempt: () => Promise<OrphanStep>,
): Promise<'deleted' | 'already_gone' | undefined> {
  try {
    const step = await attempt();
    if (step === 'vanished') {
      o.action = 'already_gone';
      return undefined;
    }
    if (typeof step === 'object') {
      o.action = 'kept';
      o.detail = step.kept;
      return undefined;
    }
    if (step === 'refused') {
      o.action = 'kept';
      o.detail = 'needs attention: not provably this fleet\'s (see the ownership findings)';
      return undefined;
    }
    o.action = step;
    return step;
  } catch (err) {
    o.action = 'delete_failed';
    o.detail = errorMessage(err);
    errors.push(`delete ${what}: ${errorMessage(err)}`);
    return undefined;
  }
}

/**
 * An orphan device has no recorded id and no agent to compare with: its hostname counts as an
 * agent's unique hostname when it has the form only tailfleet gives (with this fleet's code), or
 * when it is the name of a server of this fleet that tailfleet made (agent or job label).
 */
function orphanDeviceEvidence(ctx: PassContext, device: TailscaleDevice, seen: OrphanEvidence): DeviceEvidence {
  const tags = ctx.settings.tags;
  const hostname = device.hostname ?? '';
  if (isAgentHostname(ctx.deps.fleet, hostname)) {
    return { tags, hostname, hostnameFact: `hostname ${hostname} (an agent hostname of fleet ${ctx.deps.fleet.name})` };
  }
  const named = [...seen.servers.values()].find(
    (s) => s.name.toLowerCase() === hostname.toLowerCase() && (s.labels?.[AGENT_LABEL] !== undefined || s.labels?.[JOB_LABEL] !== undefined),
  );
  if (named) return { tags, hostname, hostnameFact: `hostname ${hostname} (the name of labelled server ${named.id})` };
  return { tags, hostname: null };
}

async function serverOwner(ctx: PassContext, o: OrphanServerFinding): Promise<string | null> {
  const repos = ctx.deps.repositories;
  const owner = await repos.instances.findLiveByServerId(o.serverId);
  if (owner) return `now owned by instance ${owner.id}`;
  // Labelled for an agent that is alive: not an orphan of a dead one, whatever its instance records.
  const live = o.agentId ? await repos.instances.findLiveByAgent(o.agentId) : null;
  if (live) return `labelled for live agent ${o.agentId} (instance ${live.id})`;
  if (o.provisioningJobId) {
    const pj = await repos.provisioningJobs.findById(o.provisioningJobId);
    if (pj && (pj.status === 'queued' || pj.status === 'running')) return `provisioning job ${pj.id} is in flight`;
  }
  return null;
}

async function deviceOwner(ctx: PassContext, o: OrphanDeviceFinding): Promise<string | null> {
  const id = await ctx.deps.repositories.instances.findLiveIdByDevice(o.deviceId, o.hostname);
  return id ? `now owned by instance ${id}` : null;
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(workers);
}
