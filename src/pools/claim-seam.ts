import type { Agent, Instance } from '../entities';

/**
 * Where a claim meets what an agent itself reports and what holds it: the one place the choice of a
 * standby, the wait before it is handed over and the lease a claim asks for are decided. Everything
 * else about a claim (src/pools/pool.repository.ts, src/workflows/claim.workflow.ts) calls these.
 */

/**
 * The SQL condition (on the agents row `alias`) a standby must meet to be claimed, beyond being a
 * settled standby of the pool with no operation under way. Nothing more yet; agent leases add "no
 * live lease" here.
 */
export function claimableStandbyCondition(alias: string): string {
  return `${alias}."id" IS NOT NULL`;
}

/**
 * Whether a claimed agent may be handed over: active, its instance running and its tailnet device
 * enrolled. The agent's own report that its bootstrap finished (`ready`) belongs here too.
 */
export function readyForClaim(agent: Agent, instance: Instance | null): boolean {
  return agent.status === 'active' && instance?.status === 'running' && instance.tailscaleDeviceId !== null;
}

/** Why a claimed agent can never become ready (the claim then fails), or null while it still may. */
export function neverReady(agent: Agent, instance: Instance | null): string | null {
  if (agent.status === 'destroyed') return `agent ${agent.id} was destroyed`;
  if (agent.status === 'error') return `agent ${agent.id} is in error (its provision failed)`;
  if (!instance) return `agent ${agent.id} has no live instance`;
  return null;
}

/**
 * What a claim's `leaseSeconds` becomes once its agent is handed over. There is no lease facility
 * yet: the seconds stay recorded on the claim (its args), and null is answered.
 */
export async function leaseForClaim(_claim: { agentId: string; operationId: string | null; leaseSeconds: number | null; holder: string }): Promise<{ leaseId: string } | null> {
  return null;
}
