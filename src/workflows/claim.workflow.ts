import { WaitTimeoutError } from '../clients/errors';
import { StateConflictError } from '../errors';
import { isReservedLabelKey } from '../fleet/server-labels';
import { claimArgs } from '../operations/types/claim';
import { leaseForClaim, neverReady, readyForClaim } from '../pools/claim-seam';
import { sleep } from '../lib/time';
import { requireAgent } from './records';
import { silentReporter, type StepReporter } from './step-reporter';
import type { OperationContext, WorkflowDeps } from './workflow-deps';

// How often a claim looks whether its agent is ready (a start, wake or provision under way).
const READY_POLL_MS = 200;

/**
 * The claim's part in the cloud: once its agent is ready, the agent's servers carry the claimer's
 * labels beside tailfleet's own. The tailnet device keeps its hostname: the Tailscale API has no
 * call that renames a device, so the new name is the agent's (recorded when the claim was accepted).
 * Safe to run again: the same labels are written again.
 */
export class ClaimWorkflow {
  constructor(private readonly deps: WorkflowDeps) {}

  async claim(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const operationId = ctx.operationId ?? null;
    const log = this.deps.logger.child({ agentId, operationId, operation: 'claim' });
    const operation = operationId ? await this.deps.repositories.operations.findById(operationId) : null;
    const args = claimArgs.parse(operation?.args ?? {});

    await r.step('ready', 10, args.from === 'running' ? 'the standby is ready' : `waiting for the agent (${args.from})`);
    const instance = await this.untilReady(agentId);
    if (!instance.serverId) throw new StateConflictError(`Instance ${instance.id} has no server id`);
    const serverId = Number(instance.serverId);

    await r.step('relabel', 60, `labelling server ${serverId} for its claimer`);
    const server = await this.deps.hetzner.getServer(serverId);
    if (!server) throw new StateConflictError(`Server ${serverId} of agent ${agentId} is gone`);
    const own = Object.fromEntries(Object.entries(server.labels).filter(([k]) => isReservedLabelKey(k)));
    await this.deps.hetzner.updateServer(serverId, { labels: { ...args.labels, ...own } });

    const lease = await leaseForClaim(this.deps.repositories.leases, { agentId, operationId, leaseSeconds: args.leaseSeconds, claimer: operation?.requestedBy ?? 'system' });
    if (lease) await r.step('lease', 90, `leased to the claimer until ${lease.expiresAt.toISOString()}`);
    await r.step('done', 100, 'claimed');
    log.info(`[Pools] Agent ${agentId} of pool ${args.pool} handed over (from ${args.from})`);
  }

  /** The agent's live instance once the agent is ready; a retryable timeout when it is not by the deadline. */
  private async untilReady(agentId: string) {
    const { actionTimeoutMs, enrollmentTimeoutMs } = this.deps.settings;
    const deadline = Date.now() + 2 * actionTimeoutMs + enrollmentTimeoutMs;
    for (;;) {
      const agent = await requireAgent(this.deps.repositories, agentId);
      const instance = await this.deps.repositories.instances.findLiveByAgent(agentId);
      if (readyForClaim(agent, instance)) return instance!;
      const never = neverReady(agent, instance);
      if (never) throw new StateConflictError(`The claimed agent cannot be handed over: ${never}`);
      if (Date.now() >= deadline) {
        throw new WaitTimeoutError({ api: 'hetzner', code: 'agent_not_ready', path: `/agents/${agentId}`, message: `Agent ${agentId} was not ready in time` });
      }
      await sleep(READY_POLL_MS);
    }
  }
}
