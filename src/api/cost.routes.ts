import express, { type Router } from 'express';
import type { CostService } from '../cost/cost.service';
import { HttpProblem } from './problem';
import { serve } from './routing';

export interface CostRouterDeps {
  cost: Pick<CostService, 'fleetCost'>;
}

/** GET /v1/fleet/cost: what the fleet costs per month, and what hibernation saves (scope read). */
export function createCostRouter(deps: CostRouterDeps): Router {
  const router = express.Router();
  serve(router, {
    getFleetCost: async (_req, res) => {
      let cost;
      try {
        cost = await deps.cost.fleetCost();
      } catch (err) {
        if (err instanceof HttpProblem) throw err;
        throw new HttpProblem('service-unavailable', `The cloud's price list cannot be read right now: ${(err as Error).message}`);
      }
      res.json(cost);
    },
  });
  return router;
}
