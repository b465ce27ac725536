import type { LeaseRepository } from '../db/lease.repository';
import type { Agent, AgentLease, Instance } from '../entities';
import { LIVE_LEASE_EXISTS } from '../policy/leases';
import { cannotBecomeReady, isReady } from '../policy/ready';

/**
 * Where a claim meets what an agent itself reports and what holds it: the one place the choice of a
 * standby, the wait before it is handed over and the lease a claim asks for are decided. Everything
 * else about a claim (src/pools/pool.repository.ts, src/workflows/claim.workflow.ts) calls these.
 */

/**
 * The SQL condition (on the agents row `alias`) a standby must meet to be claimed, beyond being a
 * settled standby of the pool with no operation under way: no live lease holds it.
 */
export function claimableStandbyCondition(alias: string): string {
  return `NOT ${LIVE_LEASE_EXISTS('now()', `${alias}."id"`)}`;
}

/**
 * Whether a claimed agent may be handed over: `ready` (running, joined, and — with a reporter — its
 * own cloud-init finished; src/policy/ready.ts).
 */
export function readyForClaim(agent: Agent, instance: Instance | null): boolean {
  return isReady(agent, instance);
}

/** Why a claimed agent can never become ready (the claim then fails), or null while it still may. */
export function neverReady(agent: Agent, instance: Instance | null): string | null {
  if (cannotBecomeReady(agent)) return `agent ${agent.id} is ${agent.status}${agent.bootstrapStatus === 'error' ? ' and its bootstrap failed' : ''}`;
  if (!instance) return `agent ${agent.id} has no live instance`;
  return null;
}

/**
 * The lease a claim's `leaseSeconds` becomes once its agent is handed over, held by the claim (holder
 * `claim <operation id>`, created by the claimer): while it is live the agent is never stopped for
 * idleness, expired or claimed again. Once per claim: a claim run again finds its lease.
 */
export async function leaseForClaim(
  leases: Pick<LeaseRepository, 'create' | 'listLive'>,
  claim: { agentId: string; operationId: string | null; leaseSeconds: number | null; claimer: string },
): Promise<AgentLease | null> {
  if (claim.leaseSeconds === null || claim.operationId === null) return null;
  const holder = `claim ${claim.operationId}`;
  const live = await leases.listLive(claim.agentId);
  return live.find((l) => l.holder === holder) ?? (await leases.create({ agentId: claim.agentId, holder, ttlSeconds: claim.leaseSeconds, createdBy: claim.claimer }));
}
