import type { DataSource } from 'typeorm';
import { SYSTEM_ACTOR, type ActivityKind, type Agent, type BootstrapStatus, type HeartbeatFigures } from '../entities';
import { Agent as AgentEntity } from '../entities';
import { NotFoundError, StateConflictError } from '../errors';
import type { PolicyActionRecord } from '../cost/cost';
import { LEASE_ACTIVITY_SQL } from '../policy/leases';
import { hydrate, recordEvent, returningRows } from './transitions';
import { isUuid } from './uuid';

/** What last counted as an agent's activity, and when. */
export interface LastActivity {
  at: Date;
  kind: ActivityKind;
}

/** Per agent: the moments each kind of activity was last seen (null: never). */
export interface ActivityMoments {
  /** A busy heartbeat or one with sessions, as reported (kind heartbeat-busy or session). */
  reported: LastActivity | null;
  /** The end of its latest lease: released, expired, or (a live one) still to come. */
  leaseEnd: Date | null;
  /** The latest operation someone (not tailfleet itself) asked for on it. */
  command: Date | null;
}

/** The latest of the moments, a live lease counting as `now`. */
export function lastActivityOf(m: ActivityMoments, now: Date): LastActivity | null {
  const candidates: LastActivity[] = [];
  if (m.reported) candidates.push(m.reported);
  if (m.leaseEnd) candidates.push({ at: m.leaseEnd.getTime() > now.getTime() ? now : m.leaseEnd, kind: 'lease' });
  if (m.command) candidates.push({ at: m.command, kind: 'command' });
  return candidates.reduce<LastActivity | null>((best, c) => (best === null || c.at.getTime() > best.at.getTime() ? c : best), null);
}

/** The SQL columns of ActivityMoments over `agents` aliased `a`. */
export const ACTIVITY_COLUMNS = `a."last_activity_at" AS "reported_at", a."last_activity_kind" AS "reported_kind",
  ${LEASE_ACTIVITY_SQL} AS "lease_end",
  (SELECT max(o."requested_at") FROM "operations" o WHERE o."agent_id" = a."id" AND o."requested_by" <> '${SYSTEM_ACTOR}') AS "command_at"`;

export function momentsOf(row: Record<string, unknown>): ActivityMoments {
  const date = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string | number | Date));
  const reportedAt = date(row.reported_at);
  return {
    reported: reportedAt ? { at: reportedAt, kind: row.reported_kind as ActivityKind } : null,
    leaseEnd: date(row.lease_end),
    command: date(row.command_at),
  };
}

/**
 * What an agent's machine reports (heartbeats, the end of its bootstrap), its expiry, and the
 * activity the policies count. Written with plain statements that leave `updated_at` alone: that
 * column says when the agent's status last changed.
 */
export class ActivityRepository {
  constructor(private readonly deps: { dataSource: DataSource }) {}

  private async reportOn(agentId: string, set: string, values: unknown[]): Promise<Agent> {
    if (!isUuid(agentId)) throw new NotFoundError(`Agent ${agentId} not found`);
    const ds = this.deps.dataSource;
    const rows = (await ds.query(returningRows(`UPDATE "agents" a SET ${set} WHERE a."id" = $1::uuid AND a."status" <> 'destroyed' RETURNING *`), [
      agentId,
      ...values,
    ])) as Array<Record<string, unknown>>;
    if (rows[0]) return hydrate(ds.manager, AgentEntity, rows[0]);
    const exists = (await ds.query(`SELECT 1 FROM "agents" WHERE "id" = $1::uuid`, [agentId])) as unknown[];
    if (exists.length === 0) throw new NotFoundError(`Agent ${agentId} not found`);
    throw new StateConflictError(`Agent ${agentId} is destroyed`);
  }

  /** A heartbeat: busy or with a session, it is activity. */
  recordHeartbeat(agentId: string, figures: HeartbeatFigures, at?: Date): Promise<Agent> {
    return this.reportOn(
      agentId,
      `"last_heartbeat_at" = COALESCE($2::timestamptz, now()), "heartbeat" = $3::jsonb,
       "last_activity_at" = CASE WHEN $4::boolean OR $5::int > 0 THEN COALESCE($2::timestamptz, now()) ELSE a."last_activity_at" END,
       "last_activity_kind" = CASE WHEN $4::boolean THEN 'heartbeat-busy' WHEN $5::int > 0 THEN 'session' ELSE a."last_activity_kind" END`,
      [at ?? null, JSON.stringify(figures), figures.busy === true, figures.sessions],
    );
  }

  /** The machine's own cloud-init has ended. A later report replaces an earlier one (a rebuilt machine). */
  recordBootstrap(agentId: string, status: BootstrapStatus, detail: string | null, at?: Date): Promise<Agent> {
    return this.reportOn(agentId, `"bootstrap_status" = $2, "bootstrap_detail" = $3, "bootstrap_at" = COALESCE($4::timestamptz, now())`, [status, detail, at ?? null]);
  }

  /** The activity moments of these agents. */
  async momentsOf(agentIds: readonly string[]): Promise<Map<string, ActivityMoments>> {
    const out = new Map<string, ActivityMoments>();
    if (agentIds.length === 0) return out;
    const rows = (await this.deps.dataSource.query(`SELECT a."id", ${ACTIVITY_COLUMNS} FROM "agents" a WHERE a."id" = ANY($1::uuid[])`, [
      [...new Set(agentIds)],
    ])) as Array<Record<string, unknown>>;
    for (const row of rows) out.set(row.id as string, momentsOf(row));
    return out;
  }

  /**
   * The policies' actions (operations tailfleet asked for itself, with a reason) that succeeded since
   * `since`, each with the instance it acted on and until when its effect lasted: the agent's next
   * operation someone asked for (a start, a wake, a reprovision), else `now`.
   */
  async policyActionsSince(since: Date, now: Date): Promise<PolicyActionRecord[]> {
    const rows = (await this.deps.dataSource.query(
      `SELECT o."type"::text AS "type", o."finished_at",
         (SELECT min(n."requested_at") FROM "operations" n
           WHERE n."agent_id" = o."agent_id" AND n."requested_at" > o."finished_at" AND n."requested_by" <> '${SYSTEM_ACTOR}') AS "until",
         i."server_type", i."location", i."snapshot_size_gb"
       FROM "operations" o
       LEFT JOIN LATERAL (
         SELECT "server_type", "location", "snapshot_size_gb" FROM "instances"
         WHERE "agent_id" = o."agent_id" AND "created_at" <= o."finished_at" ORDER BY "created_at" DESC LIMIT 1
       ) i ON true
       WHERE o."requested_by" = '${SYSTEM_ACTOR}' AND o."reason" IS NOT NULL AND o."status" = 'succeeded'
         AND o."type"::text IN ('stop', 'hibernate', 'destroy') AND o."finished_at" >= $1`,
      [since],
    )) as Array<Record<string, unknown>>;
    return rows.map((r) => ({
      type: r.type as PolicyActionRecord['type'],
      from: new Date(r.finished_at as string),
      until: r.until ? new Date(r.until as string) : now,
      instance: { serverType: r.server_type as string, location: (r.location as string | null) ?? null, snapshotSizeGb: r.snapshot_size_gb === null ? null : Number(r.snapshot_size_gb) },
    }));
  }

  /**
   * Moves the agent's expiry (its audit event: to `extended`, no webhook). NotFoundError,
   * StateConflictError for a destroyed agent.
   */
  async extend(agentId: string, expiresAt: Date, actor: string): Promise<Agent> {
    return this.deps.dataSource.transaction(async (m) => {
      if (!isUuid(agentId)) throw new NotFoundError(`Agent ${agentId} not found`);
      const before = (await m.query(`SELECT "status"::text AS status, "expires_at" FROM "agents" WHERE "id" = $1::uuid FOR UPDATE`, [agentId])) as Array<{
        status: string;
        expires_at: Date | null;
      }>;
      const row = before[0];
      if (!row) throw new NotFoundError(`Agent ${agentId} not found`);
      if (row.status === 'destroyed') throw new StateConflictError(`Agent ${agentId} is destroyed`);
      const rows = (await m.query(returningRows(`UPDATE "agents" SET "expires_at" = $2 WHERE "id" = $1::uuid RETURNING *`), [agentId, expiresAt])) as Array<
        Record<string, unknown>
      >;
      const was = row.expires_at ? new Date(row.expires_at).toISOString() : 'none';
      await recordEvent(m, {
        entityType: 'agent',
        entityId: agentId,
        agentId,
        fromStatus: row.status,
        toStatus: 'extended',
        reason: `expiry extended to ${expiresAt.toISOString()} (was ${was})`,
        actor,
      });
      return hydrate(m, AgentEntity, rows[0]!);
    });
  }

  /**
   * Records the `agent.expiring` warning for this expiry, once: the event (whose trigger writes the
   * webhook deliveries) only when the agent was not yet warned for exactly this expiry. True when
   * this call wrote it.
   */
  async warnExpiring(agentId: string, expiresAt: Date, warningSeconds: number): Promise<boolean> {
    return this.deps.dataSource.transaction(async (m) => {
      const rows = (await m.query(
        returningRows(`UPDATE "agents" SET "expiry_warned_for" = $2
          WHERE "id" = $1::uuid AND "status" <> 'destroyed' AND "expiry_warned_for" IS DISTINCT FROM $2::timestamptz
          RETURNING "status"::text AS status`),
        [agentId, expiresAt],
      )) as Array<{ status: string }>;
      if (!rows[0]) return false;
      const minutes = Math.round(warningSeconds / 60);
      await recordEvent(m, {
        entityType: 'agent',
        entityId: agentId,
        agentId,
        fromStatus: rows[0].status,
        toStatus: 'expiring',
        reason: `expires at ${expiresAt.toISOString()}${warningSeconds > 0 ? ` (warning ${minutes} min before)` : ''}; extend it to keep it`,
        actor: SYSTEM_ACTOR,
      });
      return true;
    });
  }
}
