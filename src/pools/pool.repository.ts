import { randomUUID } from 'node:crypto';
import type { DataSource, EntityManager, ObjectLiteral } from 'typeorm';
import { isUniqueViolation } from '../db/errors';
import { insertOperation } from '../db/operation.repository';
import { hydrate, quotedTable, type Db, managerOf } from '../db/transitions';
import {
  Agent,
  Instance,
  Operation,
  Pool,
  type AgentStatus,
  type InstanceStatus,
  type PoolSchedule,
  type PoolSpec,
  type StandbyMode,
} from '../entities';
import { AgentNameTakenError, PoolNameTakenError } from '../errors';
import type { ClaimArgs } from '../operations/types/claim';
import { jobIds } from '../queues/queues';
import { claimableStandbyCondition } from './claim-seam';

/**
 * The pools table and the pool side of the agents: who is a standby, how far each one is, and the
 * claim that hands one over. A claim picks its standby with FOR UPDATE SKIP LOCKED and marks it
 * claimed in the same transaction as its operation, so two claims never get the same agent.
 */

export interface NewPool {
  name: string;
  spec: PoolSpec;
  minReady: number;
  standby: StandbyMode;
  maxSize: number | null;
  schedules: PoolSchedule[];
}

export interface PoolCounts {
  /** Standbys settled in the pool's standby state, with nothing under way. */
  ready: number;
  /** Standbys on their way there (provisioning, being stopped or hibernated). */
  starting: number;
  /** Handed over and not destroyed. */
  claimed: number;
}

/** A standby as the pool policy sees it. */
export interface StandbyMember {
  agentId: string;
  status: AgentStatus;
  instanceStatus: InstanceStatus | null;
  /** An operation of the agent is queued or running. */
  busy: boolean;
  ready: boolean;
  createdAt: Date;
}

export type ClaimSource = ClaimArgs['from'];

/** A client's Idempotency-Key as stored (its slot) and the route it was sent to. */
export interface ClaimKey {
  slot: string;
  route: string;
}

/** Another request with the same Idempotency-Key inserted its claim first. */
export class ClaimKeyTakenError extends Error {
  constructor() {
    super('A claim with this Idempotency-Key was inserted by a concurrent request');
    this.name = 'ClaimKeyTakenError';
  }
}

export interface ClaimedStandby {
  agent: Agent;
  operation: Operation;
  from: Exclude<ClaimSource, 'provision'>;
}

const ZERO: PoolCounts = { ready: 0, starting: 0, claimed: 0 };

export class PoolRepository {
  private readonly ds: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.ds = deps.dataSource;
  }

  private tables() {
    const t = (target: { new (): ObjectLiteral }) => quotedTable(this.ds.getMetadata(target));
    return { pools: t(Pool), agents: t(Agent), instances: t(Instance), operations: t(Operation) };
  }

  async create(input: NewPool): Promise<Pool> {
    try {
      return await this.ds.getRepository(Pool).save(this.ds.getRepository(Pool).create(input));
    } catch (err) {
      if (isUniqueViolation(err, 'uq_pools_name')) throw new PoolNameTakenError(input.name);
      throw err;
    }
  }

  list(): Promise<Pool[]> {
    return this.ds.getRepository(Pool).find({ order: { name: 'ASC' } });
  }

  findByName(name: string, db: Db = this.ds): Promise<Pool | null> {
    return managerOf(db).findOne(Pool, { where: { name } });
  }

  async update(pool: Pool, patch: Partial<Omit<NewPool, 'name'>>): Promise<Pool> {
    await this.ds.getRepository(Pool).update({ id: pool.id }, patch);
    return (await this.findByName(pool.name))!;
  }

  /**
   * Deletes the pool and, in the same transaction, requests the destroy of each of its standbys
   * (every agent that was never claimed and has no destroy under way), so none is left behind
   * whatever happens next. Its members lose the pool (the foreign key sets it null); claimed agents
   * are the claimers' and stay as they are. Returns the destroy operations, for the caller to deliver.
   */
  async delete(pool: Pool, opts: { requestedBy?: string } = {}): Promise<Operation[]> {
    return this.ds.transaction(async (m) => {
      const { agents, operations } = this.tables();
      const rows = (await m.query(
        `SELECT a."id" FROM ${agents} a
         WHERE a."pool_id" = $1 AND a."pool_role" = 'standby' AND a."status" <> 'destroyed'
           AND NOT EXISTS (SELECT 1 FROM ${operations} o WHERE o."agent_id" = a."id" AND o."type" = 'destroy' AND o."status" IN ('queued', 'running'))
         ORDER BY a."created_at" FOR UPDATE OF a`,
        [pool.id],
      )) as Array<{ id: string }>;
      const destroying: Operation[] = [];
      for (const { id: agentId } of rows) {
        destroying.push(await this.insertCommand(m, 'destroy', agentId, `pool ${pool.name} deleted`, opts.requestedBy));
      }
      await m.delete(Pool, { id: pool.id });
      return destroying;
    });
  }

  /**
   * A stop, hibernate or destroy of one standby, asked by the pool policy: inserted only while the
   * agent is still a standby of the pool with nothing under way (and, for a stop or hibernate, its
   * instance where that can start), under the agent's row lock. A claim locks the same row to take
   * it, so the policy never stops, hibernates or destroys an agent that was just claimed. Null when
   * the standby is no longer there to act on.
   */
  async requestForStandby(pool: Pool, agentId: string, type: 'stop' | 'hibernate' | 'destroy', reason: string): Promise<Operation | null> {
    const { agents, instances, operations } = this.tables();
    const instanceFrom: Record<typeof type, string> = {
      stop: `i."status" = 'running' AND a."status" = 'active'`,
      hibernate: `i."status" IN ('running', 'stopped') AND a."status" IN ('active', 'paused')`,
      destroy: `a."status" <> 'destroyed'`,
    };
    return this.ds.transaction(async (m) => {
      const [row] = (await m.query(
        `SELECT a."id" FROM ${agents} a
         LEFT JOIN ${instances} i ON i."agent_id" = a."id" AND i."status" NOT IN ('destroyed', 'failed')
         WHERE a."id" = $1 AND a."pool_id" = $2 AND a."pool_role" = 'standby' AND ${instanceFrom[type]}
           AND NOT EXISTS (SELECT 1 FROM ${operations} o WHERE o."agent_id" = a."id" AND o."status" IN ('queued', 'running'))
         FOR UPDATE OF a`,
        [agentId, pool.id],
      )) as Array<{ id: string }>;
      if (!row) return null;
      return this.insertCommand(m, type, agentId, reason);
    });
  }

  /**
   * Claimed agents whose claim is under way but whose start or wake is not (a claim whose second
   * request was lost with its process): what the pool policy asks for again.
   */
  async claimsWaitingForPower(): Promise<Array<{ agentId: string; type: 'start' | 'wake'; pool: string }>> {
    const { agents, instances, operations } = this.tables();
    const rows = (await this.ds.query(
      `SELECT a."id", i."status"::text AS instance_status, c."args"->>'pool' AS pool
       FROM ${agents} a
       JOIN ${operations} c ON c."agent_id" = a."id" AND c."type" = 'claim' AND c."status" IN ('queued', 'running')
       JOIN ${instances} i ON i."agent_id" = a."id" AND i."status" IN ('stopped', 'hibernated')
       WHERE a."pool_role" = 'claimed' AND a."status" IN ('paused', 'hibernated')
         AND NOT EXISTS (SELECT 1 FROM ${operations} o WHERE o."agent_id" = a."id" AND o."type" <> 'claim' AND o."status" IN ('queued', 'running'))`,
    )) as Array<{ id: string; instance_status: 'stopped' | 'hibernated'; pool: string }>;
    return rows.map((r) => ({ agentId: r.id, type: r.instance_status === 'stopped' ? 'start' : 'wake', pool: r.pool }));
  }

  /**
   * The 95th percentile (ms) of how long the last 50 succeeded operations of this type took from
   * request to end, for the pool's agents (or, with no pool, any agent's); null with none on record.
   */
  async durationP95(type: 'provision' | 'stop' | 'hibernate', pool: Pool | null): Promise<number | null> {
    const { agents, operations } = this.tables();
    const [row] = (await this.ds.query(
      `SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95 FROM (
         SELECT extract(epoch FROM o."finished_at" - o."requested_at") * 1000 AS ms
         FROM ${operations} o JOIN ${agents} a ON a."id" = o."agent_id"
         WHERE o."type" = $1 AND o."status" = 'succeeded' AND o."finished_at" IS NOT NULL AND ($2::uuid IS NULL OR a."pool_id" = $2::uuid)
         ORDER BY o."finished_at" DESC LIMIT 50) recent`,
      [type, pool?.id ?? null],
    )) as Array<{ p95: number | string | null }>;
    return row?.p95 === null || row?.p95 === undefined ? null : Number(row.p95);
  }

  private async insertCommand(m: EntityManager, type: 'stop' | 'hibernate' | 'destroy', agentId: string, reason: string, requestedBy?: string): Promise<Operation> {
    const id = randomUUID();
    // The policy's own requests carry their reason on the operation; a client's (a pool's delete) in its event.
    const why = requestedBy === undefined ? { policyReason: reason } : { reason: `${type} requested: ${reason}` };
    const { operation } = await insertOperation(m, { type, id, agentId, queueJobId: jobIds.operation(id), requestedBy, ...why });
    return operation;
  }

  /** The counts of each pool (pools without members count zero). */
  async counts(pools: readonly Pool[]): Promise<Map<string, PoolCounts>> {
    const out = new Map<string, PoolCounts>(pools.map((p) => [p.id, { ...ZERO }]));
    if (pools.length === 0) return out;
    const { agents, instances, pools: poolTable, operations } = this.tables();
    const rows = (await this.ds.query(
      `SELECT a."pool_id" AS pool_id,
         count(*) FILTER (WHERE a."pool_role" = 'standby' AND ${READY_SQL}) AS ready,
         count(*) FILTER (WHERE a."pool_role" = 'standby' AND NOT (${READY_SQL})) AS starting,
         count(*) FILTER (WHERE a."pool_role" = 'claimed') AS claimed
       FROM ${agents} a
       JOIN ${poolTable} p ON p."id" = a."pool_id"
       LEFT JOIN ${instances} i ON i."agent_id" = a."id" AND i."status" NOT IN ('destroyed', 'failed')
       LEFT JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM ${operations} o WHERE o."agent_id" = a."id" AND o."status" IN ('queued', 'running')) AS busy) b ON true
       WHERE a."pool_id" = ANY($1::uuid[]) AND a."status" NOT IN ('destroyed', 'error')
       GROUP BY a."pool_id"`,
      [pools.map((p) => p.id)],
    )) as Array<{ pool_id: string; ready: string; starting: string; claimed: string }>;
    for (const r of rows) out.set(r.pool_id, { ready: Number(r.ready), starting: Number(r.starting), claimed: Number(r.claimed) });
    return out;
  }

  /** Every standby of the pool that is not destroyed. */
  async standbys(pool: Pool): Promise<StandbyMember[]> {
    const { agents, instances, pools: poolTable, operations } = this.tables();
    const rows = (await this.ds.query(
      `SELECT a."id", a."status"::text AS status, i."status"::text AS instance_status, a."created_at", b.busy, (${READY_SQL}) AS ready
       FROM ${agents} a
       JOIN ${poolTable} p ON p."id" = a."pool_id"
       LEFT JOIN ${instances} i ON i."agent_id" = a."id" AND i."status" NOT IN ('destroyed', 'failed')
       LEFT JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM ${operations} o WHERE o."agent_id" = a."id" AND o."status" IN ('queued', 'running')) AS busy) b ON true
       WHERE a."pool_id" = $1 AND a."pool_role" = 'standby' AND a."status" <> 'destroyed'
       ORDER BY a."created_at", a."id"`,
      [pool.id],
    )) as Array<{ id: string; status: AgentStatus; instance_status: InstanceStatus | null; created_at: Date; busy: boolean; ready: boolean }>;
    return rows.map((r) => ({
      agentId: r.id,
      status: r.status,
      instanceStatus: r.instance_status,
      busy: r.busy,
      ready: r.ready,
      createdAt: new Date(r.created_at),
    }));
  }

  /**
   * Takes the best standby of the pool (running before stopped before hibernated, the oldest first)
   * and hands it to the claimer in one transaction: the agent is marked claimed, renamed and
   * relabelled, and its claim operation inserted. A standby another claim has locked is skipped, so
   * concurrent claims each get their own. Null when no standby can be claimed now.
   */
  async claimStandby(
    pool: Pool,
    input: { name?: string; labels?: Record<string, string>; leaseSeconds: number | null; requestedBy?: string; key?: ClaimKey },
  ): Promise<ClaimedStandby | null> {
    const { agents, instances, operations } = this.tables();
    try {
      return await this.ds.transaction(async (m) => {
        const [picked] = (await m.query(
          `SELECT a."id", i."status"::text AS instance_status
           FROM ${agents} a
           JOIN ${instances} i ON i."agent_id" = a."id" AND i."status" IN ('running', 'stopped', 'hibernated')
           WHERE a."pool_id" = $1 AND a."pool_role" = 'standby'
             AND ((a."status" = 'active' AND i."status" = 'running') OR (a."status" = 'paused' AND i."status" = 'stopped')
               OR (a."status" = 'hibernated' AND i."status" = 'hibernated'))
             AND NOT EXISTS (SELECT 1 FROM ${operations} o WHERE o."agent_id" = a."id" AND o."status" IN ('queued', 'running'))
             AND ${claimableStandbyCondition('a')}
           ORDER BY CASE i."status" WHEN 'running' THEN 0 WHEN 'stopped' THEN 1 ELSE 2 END, a."created_at", a."id"
           LIMIT 1
           FOR UPDATE OF a SKIP LOCKED`,
          [pool.id],
        )) as Array<{ id: string; instance_status: 'running' | 'stopped' | 'hibernated' }>;
        if (!picked) return null;
        const current = await m.findOneOrFail(Agent, { where: { id: picked.id } });
        const [rows] = (await m.query(
          `UPDATE ${agents} SET "pool_role" = 'claimed', "claimed_at" = now(), "updated_at" = now(), "name" = $2, "labels" = $3::jsonb
           WHERE "id" = $1 AND "pool_role" = 'standby' RETURNING *`,
          [picked.id, input.name ?? current.name, JSON.stringify(input.labels ?? current.labels)],
        )) as [ObjectLiteral[], number];
        const agent = hydrate(m, Agent, rows[0]!);
        const operation = await this.insertClaim(m, agent.id, {
          pool: pool.name,
          from: picked.instance_status,
          labels: agent.labels,
          leaseSeconds: input.leaseSeconds,
        }, input.requestedBy, input.key);
        return { agent, operation, from: picked.instance_status };
      });
    } catch (err) {
      if (isUniqueViolation(err, 'uq_agents_live_name')) throw new AgentNameTakenError(input.name ?? '');
      throw err;
    }
  }

  /**
   * The claim operation of an agent (queued, with its job id), inside the caller's transaction.
   * ClaimKeyTakenError when a concurrent request with the same Idempotency-Key inserted its claim
   * first: the caller's transaction is then undone, standby and all, and that claim is the answer.
   */
  async insertClaim(m: EntityManager, agentId: string, args: ClaimArgs, requestedBy?: string, key?: ClaimKey): Promise<Operation> {
    const id = randomUUID();
    const { operation, created } = await insertOperation(m, {
      type: 'claim',
      id,
      agentId,
      queueJobId: jobIds.operation(id),
      args,
      requestedBy,
      idempotencyKey: key?.slot ?? null,
      idempotencyRoute: key?.route ?? null,
      reason: `claim from pool ${args.pool} requested (${args.from === 'provision' ? 'no standby ready: provisioning' : `${args.from} standby`})`,
    });
    if (!created) throw new ClaimKeyTakenError();
    return operation;
  }

  /**
   * Requests the pool's policy made in the last `windowMs`, by operation type: what its refills have
   * spent of the cloud's request budget.
   */
  async policyRequestsSince(reasons: readonly string[], since: Date): Promise<Map<string, number>> {
    const { operations } = this.tables();
    const rows = (await this.ds.query(
      `SELECT o."type"::text AS type, count(*) AS n
       FROM ${operations} o
       WHERE o."requested_at" >= $1 AND o."requested_by" = 'system' AND o."reason" = ANY($2::text[])
       GROUP BY o."type"`,
      [since, [...reasons]],
    )) as Array<{ type: string; n: string }>;
    return new Map(rows.map((r) => [r.type, Number(r.n)]));
  }
}

/** A standby settled where its pool keeps them (p: the pool, a: the agent, i: its live instance, b.busy). */
const READY_SQL = `NOT b.busy AND (
  (p."standby" = 'running' AND a."status" = 'active' AND i."status" = 'running')
  OR (p."standby" = 'stopped' AND a."status" = 'paused' AND i."status" = 'stopped')
  OR (p."standby" = 'hibernated' AND a."status" = 'hibernated' AND i."status" = 'hibernated'))`;

