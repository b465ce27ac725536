import type { Repositories } from '../db/repositories';
import type { Agent, AgentLease, BootstrapStatus, HeartbeatFigures } from '../entities';
import { LifetimeExceededError, NotFoundError } from '../errors';
import type { Logger } from '../lib/logger';

export interface PolicyRequestsDeps {
  repositories: Pick<Repositories, 'activity' | 'leases' | 'agents'>;
  /** MAX_AGENT_LIFETIME_HOURS; null: no fleet limit. */
  maxLifetimeHours: number | null;
  logger: Logger;
  now?: () => Date;
}

/**
 * What the API asks of the policies: an agent's machine reporting (heartbeat, the end of its
 * bootstrap), leases, and moving an expiry. Each is one guarded statement that completes within
 * the request: nothing here needs a worker or the cloud.
 */
export class PolicyRequests {
  private readonly now: () => Date;

  constructor(private readonly deps: PolicyRequestsDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  heartbeat(agentId: string, figures: HeartbeatFigures): Promise<Agent> {
    return this.deps.repositories.activity.recordHeartbeat(agentId, figures, this.now());
  }

  async bootstrap(agentId: string, status: BootstrapStatus, detail: string | null): Promise<Agent> {
    const agent = await this.deps.repositories.activity.recordBootstrap(agentId, status, detail, this.now());
    this.deps.logger.info({ agentId, status }, `[Policy] Agent ${agentId} reports its bootstrap ${status}`);
    return agent;
  }

  createLease(agentId: string, input: { holder: string; ttlSeconds: number; createdBy: string }): Promise<AgentLease> {
    return this.deps.repositories.leases.create({ agentId, ...input, now: this.now() });
  }

  renewLease(agentId: string, leaseId: string, ttlSeconds: number): Promise<AgentLease> {
    return this.deps.repositories.leases.renew(agentId, leaseId, ttlSeconds, this.now());
  }

  releaseLease(agentId: string, leaseId: string): Promise<AgentLease> {
    return this.deps.repositories.leases.release(agentId, leaseId, this.now());
  }

  async listLeases(agentId: string): Promise<AgentLease[]> {
    if (!(await this.deps.repositories.agents.findById(agentId))) throw new NotFoundError(`Agent ${agentId} not found`);
    return this.deps.repositories.leases.listLive(agentId, this.now());
  }

  /** A new expiry: `ttlSeconds` from now or `expiresAt`, within MAX_AGENT_LIFETIME_HOURS of the agent's creation. */
  async extend(agentId: string, input: { ttlSeconds?: number; expiresAt?: Date }, actor: string): Promise<Agent> {
    const now = this.now();
    const expiresAt = input.ttlSeconds !== undefined ? new Date(now.getTime() + input.ttlSeconds * 1000) : input.expiresAt!;
    const max = this.deps.maxLifetimeHours;
    if (max !== null) {
      const agent = await this.deps.repositories.agents.findById(agentId);
      if (agent) {
        const latest = new Date(agent.createdAt.getTime() + max * 3_600_000);
        if (expiresAt.getTime() > latest.getTime()) throw new LifetimeExceededError(max, latest);
      }
    }
    const agent = await this.deps.repositories.activity.extend(agentId, expiresAt, actor);
    this.deps.logger.info({ agentId, expiresAt: expiresAt.toISOString() }, `[Policy] Expiry of agent ${agentId} moved to ${expiresAt.toISOString()}`);
    return agent;
  }
}
