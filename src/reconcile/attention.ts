import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { findingFacts, FindingResolvedError } from '../db/ownership-finding.repository';
import type { OwnershipFinding } from '../entities';
import type { Logger } from '../lib/logger';
import type { AttentionFinding, PassContext, Snapshot } from './types';

const REVIEW_LIMIT = 100;

/**
 * Destructive calls the ownership guard refused stay open findings until the pass sees the
 * resource gone, or recorded by a live instance of this database (then it was never an orphan,
 * just another agent's). Each report lists the findings open when the pass began.
 */
export async function reviewFindings(
  ctx: PassContext,
  snapshot: Snapshot,
  seen: { servers: Map<string, HetznerServer>; devices: Map<string, TailscaleDevice> },
  errors: string[],
  log: Logger,
): Promise<AttentionFinding[]> {
  const repo = ctx.deps.repositories.findings;
  const open = await repo.listOpen(REVIEW_LIMIT);
  const out: AttentionFinding[] = [];
  for (const f of open) {
    try {
      const resolution = await settled(ctx, f, snapshot, seen);
      if (resolution) await repo.resolve(f.id, resolution).catch(ignoreResolvedMeanwhile);
      out.push(view(f, resolution));
    } catch (err) {
      errors.push(`finding ${f.id}: ${(err as Error).message}`);
      out.push(view(f, null));
      log.error({ err, findingId: f.id }, 'Reviewing an ownership finding failed');
    }
  }
  return out;
}

// An operator may have resolved it while the pass was looking.
function ignoreResolvedMeanwhile(err: unknown): void {
  if (!(err instanceof FindingResolvedError)) throw err;
}

async function settled(
  ctx: PassContext,
  f: OwnershipFinding,
  snapshot: Snapshot,
  seen: { servers: Map<string, HetznerServer>; devices: Map<string, TailscaleDevice> },
): Promise<string | null> {
  const { deps } = ctx;
  switch (f.resourceType) {
    case 'server': {
      const owner = snapshot.instances.find((i) => i.serverId === f.resourceId);
      if (owner) return `recorded by live instance ${owner.id} of agent ${owner.agentId}`;
      if (seen.servers.has(f.resourceId)) return null;
      // Not in any project's listing: read it in each project (ids are global, a server is in one).
      for (const client of deps.projects?.list.map((p) => p.client) ?? [deps.hetzner]) {
        if (await client.getServer(Number(f.resourceId))) return null;
      }
      return 'server gone';
    }
    case 'device': {
      const owner = snapshot.instances.find((i) => i.tailscaleDeviceId === f.resourceId);
      if (owner) return `recorded by live instance ${owner.id} of agent ${owner.agentId}`;
      return seen.devices.has(f.resourceId) ? null : 'device gone';
    }
    case 'auth_key': {
      const key = await deps.tailscale.getAuthKey(f.resourceId);
      return !key || key.revoked || key.invalid ? 'auth key revoked or gone' : null;
    }
    default:
      // Images: the pass does not list them; an operator resolves these.
      return null;
  }
}

function view(f: OwnershipFinding, resolution: string | null): AttentionFinding {
  return {
    findingId: f.id,
    ...findingFacts(f),
    createdAt: new Date(f.createdAt).toISOString(),
    state: resolution ? 'resolved' : 'open',
    ...(resolution ? { detail: resolution } : {}),
  };
}
