import type { Repositories } from '../db/repositories';
import type { Instance } from '../entities';
import type { Logger } from '../lib/logger';
import { fleetCost, instanceCost, policySaving, round, type AgentCost, type FleetCost, type ProjectCost } from './cost';
import type { CapacityStore } from '../workflows/placement';
import type { PriceList } from './prices';

export interface CostServiceDeps {
  prices: Pick<PriceList, 'get'>;
  repositories: Pick<Repositories, 'agents' | 'instances' | 'activity'>;
  /** Where an instance without a recorded location lives (HETZNER_LOCATION). */
  defaultLocation: string;
  logger: Logger;
  /** The deployment's Hetzner projects and what the workers share about them (budgets, full marks). */
  projects?: { list: readonly { name: string; maxServers: number | null }[]; capacity: Pick<CapacityStore, 'budgets' | 'refused'> };
}

const REFUSAL_WINDOW_MS = 24 * 3_600_000;

/** The cost read model: per agent (shown in its view) and for the whole fleet (GET /v1/fleet/cost). */
export class CostService {
  constructor(private readonly deps: CostServiceDeps) {}

  /**
   * The monthly cost of each instance, in order; null for all of them when no prices could be had
   * (an agent view still answers without its cost while the cloud's price list is unreachable).
   */
  async instanceCosts(instances: Array<Instance | null>): Promise<Array<AgentCost | null>> {
    try {
      const prices = await this.deps.prices.get();
      return instances.map((i) => instanceCost(prices, i, this.deps.defaultLocation));
    } catch (err) {
      this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Prices unavailable; agent costs left out');
      return instances.map(() => null);
    }
  }

  /** Every agent with a live instance, summed. Throws when no prices can be had. */
  async fleetCost(): Promise<FleetCost> {
    const prices = await this.deps.prices.get();
    const instances = await this.deps.repositories.instances.listLive();
    const agents = await this.deps.repositories.agents.findByIds(instances.map((i) => i.agentId));
    const items = instances.flatMap((instance) => {
      const agent = agents.get(instance.agentId);
      return agent ? [{ agent, instance }] : [];
    });
    const now = new Date();
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
    const records = await this.deps.repositories.activity.policyActionsSince(monthStart, now);
    const cost = fleetCost(prices, items, this.deps.defaultLocation, policySaving(prices, records, monthStart, this.deps.defaultLocation));
    if (this.deps.projects) cost.projects = await this.projectCosts(prices, instances);
    return cost;
  }

  private async projectCosts(prices: Awaited<ReturnType<CostServiceDeps['prices']['get']>>, instances: Instance[]): Promise<ProjectCost[]> {
    const { list, capacity } = this.deps.projects!;
    const names = list.map((p) => p.name);
    const [refusals, budgets, full] = await Promise.all([
      this.deps.repositories.instances.placementRefusalsSince(new Date(Date.now() - REFUSAL_WINDOW_MS)),
      capacity.budgets(names).catch(() => new Map()),
      capacity.refused([], names).then((r) => r.projects).catch(() => new Set<string>()),
    ]);
    return list.map((p) => {
      const own = instances.filter((i) => (i.hetznerProject ?? names[0]) === p.name);
      const byCode: Record<string, number> = {};
      for (const r of refusals.filter((x) => x.project === p.name)) byCode[r.code] = r.n;
      return {
        name: p.name,
        servers: own.filter((i) => i.serverId !== null).length,
        maxServers: p.maxServers,
        full: full.has(p.name),
        monthly: round(own.reduce((sum, i) => sum + instanceCost(prices, i, this.deps.defaultLocation).monthly, 0)),
        budget: budgets.get(p.name) ?? null,
        refusals: { total: Object.values(byCode).reduce((a, b) => a + b, 0), byCode },
      };
    });
  }
}
