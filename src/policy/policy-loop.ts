import type { DataSource } from 'typeorm';
import { momentsOf, type ActivityRepository } from '../db/activity.repository';
import { withAdvisoryLock } from '../db/advisory-lock';
import { SYSTEM_ACTOR, type AgentStatus, type IdleStep } from '../entities';
import { errorMessage, StateConflictError } from '../errors';
import type { Logger } from '../lib/logger';
import { PeriodicPass } from '../lib/periodic';
import { decide, type PolicyAction, type PolicyAgent, type PolicyDecision, type PolicySettings } from './decide';
import { LIVE_LEASE_PREDICATE } from './leases';

/**
 * The policy loop: every POLICY_INTERVAL_SECONDS one process of the fleet (a session advisory lock,
 * as the reconciler and the outbox relay take) reads every agent a policy may concern, decides
 * (./decide.ts) and acts — each action an ordinary operation (stop, hibernate, destroy) requested
 * by `system` with its reason, through the same ledger and queue as a request from the API; each
 * expiry warning an event whose webhook is `agent.expiring`. An action is requested at the first
 * pass after it is due, so within one interval of its threshold.
 */

const POLICY_LOCK_KEY = 7_412_903_613;

export interface PolicyActor {
  /** Requests the operation (production: OperationsService.requestCommand with requestedBy system). */
  request(action: PolicyAction, agentId: string, reason: string): Promise<{ operationId: string }>;
}

export interface PolicyLoopDeps {
  dataSource: DataSource;
  activity: Pick<ActivityRepository, 'warnExpiring'>;
  actor: PolicyActor;
  logger: Logger;
  intervalMs: number;
  settings: PolicySettings & { maxLifetimeHours: number | null };
  now?: () => Date;
}

export interface PolicyPass {
  /** False when another process of the fleet held the loop's lock. */
  ran: boolean;
  considered: number;
  warned: number;
  requested: Array<{ agentId: string; action: PolicyAction; operationId: string; reason: string; dueAt: Date; at: Date }>;
}

// One row per agent: each table it joins is read once per agent, through its index on agent_id.
// Times come as epoch milliseconds (float8): the driver turns those into numbers, far cheaper than
// parsing timestamps, and a pass reads every agent the policies concern.
const ms = (column: string) => `(extract(epoch from ${column}) * 1000)::float8`;
const STATE_SQL = `
SELECT a."id", a."status"::text AS "status", a."spec"->'idle' AS "idle", ${ms('a."created_at"')} AS "created_at", ${ms('a."updated_at"')} AS "updated_at",
  ${ms('a."expires_at"')} AS "expires_at", ${ms('a."expiry_warned_for"')} AS "expiry_warned_for",
  i."status"::text AS "instance_status", ${ms('i."started_at"')} AS "instance_started_at",
  ${ms('a."last_activity_at"')} AS "reported_at", a."last_activity_kind" AS "reported_kind",
  ${ms('l."lease_end"')} AS "lease_end", COALESCE(l."leased", false) AS "leased",
  ${ms('o."command_at"')} AS "command_at", COALESCE(o."pending", false) AS "operation_pending",
  (SELECT count(*) FROM unnest(o."policy_failed") f WHERE f > COALESCE(o."policy_ok_at", '-infinity'))::int AS "policy_failures",
  ${ms('(SELECT max(f) FROM unnest(o."policy_failed") f)')} AS "policy_failed_at",
  a."pool_role" IS NOT DISTINCT FROM 'standby' AS "pool_standby"
FROM "agents" a
LEFT JOIN LATERAL (
  SELECT "status", "started_at" FROM "instances"
  WHERE "agent_id" = a."id" AND "status"::text NOT IN ('destroyed', 'failed')
  ORDER BY "created_at" DESC LIMIT 1
) i ON true
LEFT JOIN LATERAL (
  SELECT max(LEAST(COALESCE(l."released_at", l."expires_at"), l."expires_at")) AS "lease_end", bool_or(${LIVE_LEASE_PREDICATE('$1::timestamptz')}) AS "leased"
  FROM "agent_leases" l WHERE l."agent_id" = a."id"
) l ON true
LEFT JOIN LATERAL (
  SELECT max(o."requested_at") FILTER (WHERE o."requested_by" <> '${SYSTEM_ACTOR}') AS "command_at",
    bool_or(o."status"::text IN ('queued', 'running')) AS "pending",
    max(o."finished_at") FILTER (WHERE o."requested_by" = '${SYSTEM_ACTOR}' AND o."status"::text = 'succeeded') AS "policy_ok_at",
    array_agg(o."finished_at") FILTER (WHERE o."requested_by" = '${SYSTEM_ACTOR}' AND o."status"::text = 'failed') AS "policy_failed"
  FROM "operations" o WHERE o."agent_id" = a."id"
) o ON true
WHERE a."status" <> 'destroyed'
  AND (a."spec"->'idle' IS NOT NULL OR a."expires_at" IS NOT NULL OR ($2::boolean AND a."status" = 'paused'))`;

export function policyAgentOf(row: Record<string, unknown>): PolicyAgent {
  const date = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string | number | Date));
  return {
    id: row.id as string,
    status: row.status as AgentStatus,
    idle: (row.idle as IdleStep[] | null) ?? null,
    createdAt: date(row.created_at)!,
    updatedAt: date(row.updated_at)!,
    expiresAt: date(row.expires_at),
    expiryWarnedFor: date(row.expiry_warned_for),
    instanceStatus: (row.instance_status as string | null) ?? null,
    instanceStartedAt: date(row.instance_started_at),
    moments: momentsOf(row),
    leased: row.leased === true,
    operationPending: row.operation_pending === true,
    poolStandby: row.pool_standby === true,
    policyFailures: Number(row.policy_failures ?? 0) > 0 ? { count: Number(row.policy_failures), lastAt: date(row.policy_failed_at)! } : null,
  };
}

/** Every agent a policy may concern, as of `now`. The fleet's maximum lifetime is written onto expiries first. */
export async function readPolicyAgents(dataSource: DataSource, now: Date, opts: { maxLifetimeHours: number | null; autoHibernate: boolean }): Promise<PolicyAgent[]> {
  if (opts.maxLifetimeHours !== null) {
    await dataSource.query(
      `UPDATE "agents" SET "expires_at" = "created_at" + make_interval(secs => $1)
       WHERE "status" <> 'destroyed' AND ("expires_at" IS NULL OR "expires_at" > "created_at" + make_interval(secs => $1))`,
      [opts.maxLifetimeHours * 3600],
    );
  }
  const rows = (await dataSource.query(STATE_SQL, [now, opts.autoHibernate])) as Array<Record<string, unknown>>;
  return rows.map(policyAgentOf);
}

export class PolicyLoop extends PeriodicPass<PolicyPass> {
  private readonly now: () => Date;

  constructor(private readonly deps: PolicyLoopDeps) {
    super(deps.intervalMs);
    this.now = deps.now ?? (() => new Date());
  }

  protected passFailed(err: unknown): void {
    this.deps.logger.warn({ err: { message: errorMessage(err) } }, 'Policy pass failed; trying again next interval');
  }

  protected async pass(): Promise<PolicyPass> {
    const run = await withAdvisoryLock(this.deps.dataSource, POLICY_LOCK_KEY, () => this.decideAndAct());
    return run.locked ? run.value : { ran: false, considered: 0, warned: 0, requested: [] };
  }

  private async decideAndAct(): Promise<PolicyPass> {
    const now = this.now();
    const { settings } = this.deps;
    const agents = await readPolicyAgents(this.deps.dataSource, now, {
      maxLifetimeHours: settings.maxLifetimeHours,
      autoHibernate: settings.autoHibernateAfterMs !== null,
    });
    const out: PolicyPass = { ran: true, considered: agents.length, warned: 0, requested: [] };
    for (const agent of agents) {
      for (const decision of decide(agent, now, settings)) {
        try {
          await this.apply(decision, now, out);
        } catch (err) {
          // One agent's trouble does not hold up the others; the next pass decides again.
          this.deps.logger.warn({ err: { message: errorMessage(err) }, agentId: agent.id }, `[Policy] Could not act on agent ${agent.id}`);
        }
      }
    }
    return out;
  }

  private async apply(decision: PolicyDecision, now: Date, out: PolicyPass): Promise<void> {
    const log = this.deps.logger;
    if (decision.kind === 'warn') {
      const seconds = Math.round(this.deps.settings.expiryWarningMs / 1000);
      if (await this.deps.activity.warnExpiring(decision.agentId, decision.expiresAt, seconds)) {
        out.warned++;
        log.info({ agentId: decision.agentId, expiresAt: decision.expiresAt.toISOString() }, `[Policy] Agent ${decision.agentId} expires at ${decision.expiresAt.toISOString()}; warned`);
      }
      return;
    }
    try {
      const { operationId } = await this.deps.actor.request(decision.action, decision.agentId, decision.reason);
      out.requested.push({ agentId: decision.agentId, action: decision.action, operationId, reason: decision.reason, dueAt: decision.dueAt, at: now });
      log.info({ agentId: decision.agentId, operationId, action: decision.action, requestedBy: SYSTEM_ACTOR }, `[Policy] ${decision.action} of agent ${decision.agentId} requested: ${decision.reason}`);
    } catch (err) {
      // Someone moved the agent since it was read: their request stands.
      if (err instanceof StateConflictError) return;
      throw err;
    }
  }
}
