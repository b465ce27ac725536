import { StateConflictError } from '../errors';
import type { Logger } from '../lib/logger';
import type { AutoHibernation, PassContext, Snapshot } from './types';

/**
 * AUTO_HIBERNATE_AFTER_HOURS: an agent paused for longer than that still pays for its server in
 * full, so each pass asks for its hibernation — one ordinary hibernate operation per agent, requested
 * by `system`, through the same ledger and queue as a request from the API (visible, audited,
 * cancellable while queued). Agents with an operation queued or running are left alone: whatever
 * someone asked for last goes first.
 */
export async function requestAutoHibernations(ctx: PassContext, snapshot: Snapshot, log: Logger): Promise<AutoHibernation[]> {
  const auto = ctx.deps.autoHibernate;
  if (!auto) return [];
  const cutoff = ctx.now() - auto.afterMs;
  const stopped = new Set(snapshot.instances.filter((i) => i.status === 'stopped').map((i) => i.agentId));
  const out: AutoHibernation[] = [];
  for (const agent of snapshot.agents.values()) {
    if (agent.status !== 'paused' || !stopped.has(agent.id)) continue;
    if (agent.updatedAt.getTime() > cutoff) continue;
    if ((snapshot.activeOps.get(agent.id) ?? []).length > 0) continue;
    try {
      const { operation } = await auto.request(agent.id);
      out.push({ agentId: agent.id, operationId: operation.id, pausedSince: agent.updatedAt.toISOString() });
      log.info({ agentId: agent.id, operationId: operation.id }, `[Reconcile] Agent ${agent.id} paused since ${agent.updatedAt.toISOString()}; hibernation requested`);
    } catch (err) {
      // Someone moved the agent since the snapshot: their request stands.
      if (err instanceof StateConflictError) continue;
      throw err;
    }
  }
  return out;
}
