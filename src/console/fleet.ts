import { qs, type ConsoleApi } from './api';

/** What the fleet page reads: a few API calls, summed here. */

const AGENT_PAGES = 20;
const OPERATION_PAGES = 10;
const HOUR_MS = 3600_000;

export interface HourBucket {
  hour: string;
  operations: number;
  failures: number;
}

/** Operations and failures per hour, for the last `hours` hours (oldest first). */
export function hourlyOperations(items: Array<{ requestedAt: string; status: string }>, hours = 24, now = Date.now()): HourBucket[] {
  const end = Math.floor(now / HOUR_MS) * HOUR_MS;
  const buckets: HourBucket[] = [];
  for (let i = hours - 1; i >= 0; i--) buckets.push({ hour: new Date(end - i * HOUR_MS).toISOString().slice(11, 16), operations: 0, failures: 0 });
  for (const op of items) {
    const index = hours - 1 - Math.floor((end - Math.floor(Date.parse(op.requestedAt) / HOUR_MS) * HOUR_MS) / HOUR_MS);
    const bucket = buckets[index];
    if (!bucket) continue;
    bucket.operations++;
    if (op.status === 'failed') bucket.failures++;
  }
  return buckets;
}

async function allPages(api: ConsoleApi, path: string, params: Record<string, string | number | undefined>, pages: number): Promise<{ items: any[]; complete: boolean }> {
  const items: any[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < pages; i++) {
    const answer = await api.get(`${path}${qs({ ...params, limit: 100, cursor })}`);
    if (!answer.ok) return { items, complete: false };
    items.push(...answer.body.items);
    cursor = answer.body.nextCursor ?? undefined;
    if (!cursor) return { items, complete: true };
  }
  return { items, complete: false };
}

export async function fleetPage(api: ConsoleApi) {
  const since = new Date(Date.now() - 24 * HOUR_MS).toISOString();
  const [agents, cost, findings, failed, recent] = await Promise.all([
    allPages(api, '/v1/agents', {}, AGENT_PAGES),
    api.get('/v1/fleet/cost'),
    api.get(`/v1/findings${qs({ status: 'open', limit: 100 })}`),
    api.get(`/v1/operations${qs({ status: 'failed', since, limit: 20 })}`),
    allPages(api, '/v1/operations', { since }, OPERATION_PAGES),
  ]);
  const byStatus: Record<string, number> = {};
  for (const a of agents.items) byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
  const costByStatus = cost.ok ? (cost.body.monthly.byStatus as Record<string, number>) : {};
  return {
    agentsByStatus: byStatus,
    agentCount: agents.items.length,
    agentsComplete: agents.complete,
    cost: cost.ok ? cost.body : null,
    openFindings: findings.ok ? findings.body.items : [],
    moreFindings: findings.ok && findings.body.nextCursor !== null,
    failedOperations: failed.ok ? failed.body.items : [],
    chart: {
      hourly: hourlyOperations(recent.items),
      cost: Object.entries(costByStatus).filter(([, amount]) => amount > 0),
      currency: cost.ok ? cost.body.currency : null,
    },
  };
}
