import type { Repositories } from '../db/repositories';
import type { Instance } from '../entities';
import type { Logger } from '../lib/logger';
import { fleetCost, instanceCost, policySaving, type AgentCost, type FleetCost } from './cost';
import type { PriceList } from './prices';

export interface CostServiceDeps {
  prices: Pick<PriceList, 'get'>;
  repositories: Pick<Repositories, 'agents' | 'instances' | 'activity'>;
  /** Where an instance without a recorded location lives (HETZNER_LOCATION). */
  defaultLocation: string;
  logger: Logger;
}

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
    return fleetCost(prices, items, this.deps.defaultLocation, policySaving(prices, records, monthStart, this.deps.defaultLocation));
  }
}
