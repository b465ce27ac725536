import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { AGENT_LABEL, INSTANCE_LABEL, JOB_LABEL, MANAGED_LABEL } from '../fleet/server-labels';
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

export async function deleteOrphans(
  ctx: PassContext,
  servers: OrphanServerFinding[],
  devices: OrphanDeviceFinding[],
  errors: string[],
  log: Logger,
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
  await mapLimit(servers, DELETE_CONCURRENCY, async (o) => {
    try {
      // The snapshot may be a few seconds old: ask the database once more right before deleting.
      const owner = await serverOwner(ctx, o);
      if (owner) {
        o.action = 'kept';
        o.detail = owner;
        return;
      }
      // The label is the licence to delete: read the server once more in case someone took it off.
      const current = await deps.hetzner.getServer(Number(o.serverId));
      if (!current) {
        o.action = 'already_gone';
        return;
      }
      if (current.labels?.[MANAGED_LABEL.key] !== MANAGED_LABEL.value) {
        o.action = 'kept';
        o.detail = 'no longer carries the managed-by label';
        return;
      }
      if (!deps.fleet.ownsServer(current)) {
        o.action = 'kept';
        o.detail = `no longer carries the label of fleet ${deps.fleet.name}`;
        return;
      }
      const deleted = await deps.hetzner.deleteServer(Number(o.serverId));
      o.action = deleted ? 'deleted' : 'already_gone';
      if (deleted) deps.metrics?.reconcileRepairs.inc({ kind: 'orphan_server_deleted' });
      log.warn({ serverId: o.serverId, name: o.name }, `[Reconcile] Orphan server ${o.serverId} deleted`);
    } catch (err) {
      o.action = 'delete_failed';
      o.detail = (err as Error).message;
      errors.push(`delete server ${o.serverId}: ${(err as Error).message}`);
    }
  });
  await mapLimit(devices, DELETE_CONCURRENCY, async (o) => {
    try {
      const owner = await deviceOwner(ctx, o);
      if (owner) {
        o.action = 'kept';
        o.detail = owner;
        return;
      }
      const deleted = await deps.tailscale.deleteDevice(o.deviceId);
      o.action = deleted ? 'deleted' : 'already_gone';
      if (deleted) deps.metrics?.reconcileRepairs.inc({ kind: 'orphan_device_deleted' });
      log.warn({ deviceId: o.deviceId, hostname: o.hostname }, `[Reconcile] Orphan device ${o.deviceId} deleted`);
    } catch (err) {
      o.action = 'delete_failed';
      o.detail = (err as Error).message;
      errors.push(`delete device ${o.deviceId}: ${(err as Error).message}`);
    }
  });
}

async function serverOwner(ctx: PassContext, o: OrphanServerFinding): Promise<string | null> {
  const repos = ctx.deps.repositories;
  const owner = await repos.instances.findLiveByServerId(o.serverId);
  if (owner) return `now owned by instance ${owner.id}`;
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
