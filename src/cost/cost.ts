import { AGENT_STATUSES, LIVE_INSTANCE_STATUSES, type Agent, type AgentStatus, type Instance } from '../entities';
import type { Prices } from './prices';

/**
 * What agents cost per month, from the cloud's own prices. A server is billed while it exists,
 * running or off, together with its primary IPv4 address; a snapshot is billed per GB. So an
 * instance costs its server (and address) while it has one, plus its snapshot while it has one.
 */

export interface AgentCost {
  currency: string;
  /** Monthly, gross. */
  monthly: number;
  server: number;
  primaryIpv4: number;
  snapshot: number;
}

export interface FleetCost {
  currency: string;
  /** Per Hetzner project: servers, monthly cost, request budget, refused creates. */
  projects?: ProjectCost[];
  monthly: {
    total: number;
    byStatus: Record<AgentStatus, number>;
    /** What the hibernated agents save now: their server and address, less their snapshots. */
    hibernationSaving: number;
    /**
     * What hibernating every paused agent would save on top: its server and address, less a
     * snapshot as large as the server's disk (an upper bound: real snapshots hold only used space).
     */
    potentialSaving: number;
  };
  /** What the policies' actions (src/policy) saved since the start of this month (UTC). */
  policies: PolicySaving;
}

export interface PolicySaving {
  /** The month, `YYYY-MM` (UTC). */
  month: string;
  /** Server and address hours not billed after a policy's hibernate or destroy, less the snapshots kept meanwhile. */
  saved: number;
  /** The policies' actions this month that succeeded, by type. A stop saves nothing: Hetzner bills a server while it is off. */
  actions: { stop: number; hibernate: number; destroy: number };
}

/** A policy's action that succeeded: from `from` until `until` (the agent's next start, or now) its server was not billed. */
export interface PolicyActionRecord {
  type: 'stop' | 'hibernate' | 'destroy';
  from: Date;
  until: Date;
  instance: Pick<Instance, 'serverType' | 'location' | 'snapshotSizeGb'>;
}

// Hetzner caps a month at this many billed hours.
const HOURS_PER_MONTH = 730;

export function policySaving(prices: Prices, records: readonly PolicyActionRecord[], monthStart: Date, fallbackLocation: string): PolicySaving {
  const actions = { stop: 0, hibernate: 0, destroy: 0 };
  let saved = 0;
  for (const r of records) {
    actions[r.type]++;
    if (r.type === 'stop') continue;
    const from = Math.max(r.from.getTime(), monthStart.getTime());
    const hours = Math.max(0, r.until.getTime() - from) / 3_600_000;
    // The server is gone by now; its address is counted as billed, as for every server but an IPv6-only one.
    const { server, primaryIpv4 } = serverAndAddress(prices, { ...r.instance, serverId: null, serverIp: null }, fallbackLocation);
    const snapshot = r.type === 'hibernate' ? (r.instance.snapshotSizeGb ?? 0) * prices.snapshotPerGb : 0;
    saved += ((server + primaryIpv4 - snapshot) * hours) / HOURS_PER_MONTH;
  }
  const month = `${monthStart.getUTCFullYear()}-${String(monthStart.getUTCMonth() + 1).padStart(2, '0')}`;
  return { month, saved: round(saved), actions };
}

export interface ProjectCost {
  name: string;
  /** Live instances with a server in the project. */
  servers: number;
  /** The configured server limit; null = not configured. */
  maxServers: number | null;
  /** Marked full by a resource_limit_exceeded within the cooldown. */
  full: boolean;
  monthly: number;
  /** The request budget as a worker last saw it; null until a worker has created there. */
  budget: { limit: number | null; remaining: number | null; at: string } | null;
  /** Creates the project refused in the last 24 hours, by Hetzner error code. */
  refusals: { total: number; byCode: Record<string, number> };
}

/** Money to 4 decimals, as Hetzner quotes it. */
export const round = (n: number) => Math.round(n * 10_000) / 10_000;

const LIVE: readonly string[] = LIVE_INSTANCE_STATUSES;

/**
 * Monthly price of a server of this type and its primary IPv4 address; 0 when the cloud quotes none.
 * A server recorded without an IPv4 address was created IPv6-only: no address is billed.
 */
function serverAndAddress(prices: Prices, instance: Pick<Instance, 'serverType' | 'location' | 'serverId' | 'serverIp'>, fallbackLocation: string) {
  const location = instance.location ?? fallbackLocation;
  const ipv6Only = instance.serverId !== null && (instance.serverIp === null || instance.serverIp.includes(':'));
  return { server: prices.server(instance.serverType, location) ?? 0, primaryIpv4: ipv6Only ? 0 : (prices.primaryIpv4(location) ?? 0) };
}

export function instanceCost(prices: Prices, instance: Instance | null, fallbackLocation: string): AgentCost {
  const cost: AgentCost = { currency: prices.currency, monthly: 0, server: 0, primaryIpv4: 0, snapshot: 0 };
  if (!instance || !LIVE.includes(instance.status)) return cost;
  if (instance.serverId) Object.assign(cost, serverAndAddress(prices, instance, fallbackLocation));
  if (instance.snapshotImageId && instance.snapshotSizeGb !== null) cost.snapshot = instance.snapshotSizeGb * prices.snapshotPerGb;
  cost.server = round(cost.server);
  cost.primaryIpv4 = round(cost.primaryIpv4);
  cost.snapshot = round(cost.snapshot);
  cost.monthly = round(cost.server + cost.primaryIpv4 + cost.snapshot);
  return cost;
}

export function fleetCost(
  prices: Prices,
  items: Array<{ agent: Pick<Agent, 'status'>; instance: Instance | null }>,
  fallbackLocation: string,
  policies: PolicySaving,
): FleetCost {
  const byStatus = Object.fromEntries(AGENT_STATUSES.map((s) => [s, 0])) as Record<AgentStatus, number>;
  let total = 0;
  let hibernationSaving = 0;
  let potentialSaving = 0;
  for (const { agent, instance } of items) {
    const cost = instanceCost(prices, instance, fallbackLocation);
    byStatus[agent.status] += cost.monthly;
    total += cost.monthly;
    if (!instance) continue;
    const running = serverAndAddress(prices, instance, fallbackLocation);
    const wouldCost = running.server + running.primaryIpv4;
    if (agent.status === 'hibernated') hibernationSaving += wouldCost - cost.snapshot;
    if (agent.status === 'paused') potentialSaving += wouldCost - (prices.diskGb(instance.serverType) ?? 0) * prices.snapshotPerGb;
  }
  for (const s of AGENT_STATUSES) byStatus[s] = round(byStatus[s]);
  return {
    currency: prices.currency,
    monthly: { total: round(total), byStatus, hibernationSaving: round(hibernationSaving), potentialSaving: round(potentialSaving) },
    policies,
  };
}
