import type { HetznerServer, ShutdownResult } from '../clients/hetzner/hetzner.types';
import type { AuditEntry } from '../db/ownership-finding.repository';
import type { GuardContext, OwnershipGuard, Verdict } from '../fleet/ownership-guard';
import type { WorkflowDeps } from './workflow-deps';

/**
 * Shuts an agent's server down (a graceful shutdown that may end in a forced power-off). The guard
 * checks, on the server the client reads anyway, that it is this agent's (the recorded one) before
 * any power action, and records the power-off once it has happened — or, with `keepAudit`, hands
 * its audit entry back (null when there was no power action) for the caller to write with its own
 * moves.
 */
export async function shutdownGuarded(
  deps: Pick<WorkflowDeps, 'hetzner' | 'settings'>,
  guard: OwnershipGuard,
  serverId: number,
  ctx: GuardContext & { agentId: string },
  opts: { keepAudit?: boolean } = {},
): Promise<{ result: ShutdownResult; audit: AuditEntry | null }> {
  let checked: { server: HetznerServer; verdict: Verdict } | undefined;
  const result = await deps.hetzner.shutdownServer(serverId, {
    timeoutMs: deps.settings.shutdownTimeoutMs,
    verify: async (server) => {
      checked = { server, verdict: await guard.checkPowerOff(server, { agentId: ctx.agentId, recordedIds: [serverId] }, ctx) };
    },
  });
  if (!checked) return { result, audit: null };
  if (opts.keepAudit) return { result, audit: guard.powerOffAudit(checked.server, checked.verdict, result, ctx) };
  await guard.auditPowerOff(checked.server, checked.verdict, result, ctx);
  return { result, audit: null };
}
