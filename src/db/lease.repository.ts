import type { DataSource } from 'typeorm';
import { AgentLease } from '../entities';
import { NotFoundError, StateConflictError } from '../errors';
import { isUuid } from './uuid';
import { hydrate, returningRows } from './transitions';

/** Leases on agents (src/policy/leases.ts says what a live one holds off). */
export class LeaseRepository {
  constructor(private readonly deps: { dataSource: DataSource }) {}

  private get ds(): DataSource {
    return this.deps.dataSource;
  }

  /** A new lease on a live (not destroyed) agent: NotFoundError for an unknown one, StateConflictError for a destroyed one. */
  async create(input: { agentId: string; holder: string; ttlSeconds: number; createdBy: string; now?: Date }): Promise<AgentLease> {
    const rows = (await this.ds.query(
      `WITH agent AS (SELECT "status"::text AS status FROM "agents" WHERE "id" = $1::uuid FOR SHARE),
       made AS (
         INSERT INTO "agent_leases" ("agent_id", "holder", "expires_at", "created_by")
         SELECT $1::uuid, $2, COALESCE($5::timestamptz, now()) + make_interval(secs => $3), $4
         FROM agent WHERE status <> 'destroyed'
         RETURNING *
       )
       SELECT (SELECT status FROM agent) AS "__agent", made.* FROM (SELECT 1) one LEFT JOIN made ON true`,
      [input.agentId, input.holder, input.ttlSeconds, input.createdBy, input.now ?? null],
    )) as Array<Record<string, unknown>>;
    const row = rows[0]!;
    if (row.__agent === null) throw new NotFoundError(`Agent ${input.agentId} not found`);
    if (row.id === null) throw new StateConflictError(`Agent ${input.agentId} is destroyed`);
    return hydrate(this.ds.manager, AgentLease, row);
  }

  /** The lease, if it is the agent's. */
  async find(agentId: string, leaseId: string): Promise<AgentLease | null> {
    if (!isUuid(leaseId)) return null;
    return this.ds.getRepository(AgentLease).findOneBy({ id: leaseId, agentId });
  }

  /**
   * Renews a live lease to `ttlSeconds` from now. An expired or released lease is not brought back
   * (the agent may have been acted on since): StateConflictError; take a new one.
   */
  async renew(agentId: string, leaseId: string, ttlSeconds: number, now?: Date): Promise<AgentLease> {
    if (!isUuid(leaseId)) throw new NotFoundError(`Lease ${leaseId} of agent ${agentId} not found`);
    const rows = (await this.ds.query(
      returningRows(`UPDATE "agent_leases" SET "expires_at" = COALESCE($4::timestamptz, now()) + make_interval(secs => $3)
       WHERE "id" = $1::uuid AND "agent_id" = $2::uuid AND "released_at" IS NULL AND "expires_at" > COALESCE($4::timestamptz, now())
       RETURNING *`),
      [leaseId, agentId, ttlSeconds, now ?? null],
    )) as Array<Record<string, unknown>>;
    const row = rows[0];
    if (row) return hydrate(this.ds.manager, AgentLease, row);
    const lease = await this.find(agentId, leaseId);
    if (!lease) throw new NotFoundError(`Lease ${leaseId} of agent ${agentId} not found`);
    throw new StateConflictError(`Lease ${leaseId} ${lease.releasedAt ? 'was released' : 'has expired'}; take a new one`);
  }

  /** Releases the lease (a released one stays as it was: releasing twice is not an error). */
  async release(agentId: string, leaseId: string, now?: Date): Promise<AgentLease> {
    if (!isUuid(leaseId)) throw new NotFoundError(`Lease ${leaseId} of agent ${agentId} not found`);
    await this.ds.query(
      `UPDATE "agent_leases" SET "released_at" = LEAST(COALESCE($3::timestamptz, now()), "expires_at")
       WHERE "id" = $1::uuid AND "agent_id" = $2::uuid AND "released_at" IS NULL`,
      [leaseId, agentId, now ?? null],
    );
    const lease = await this.find(agentId, leaseId);
    if (!lease) throw new NotFoundError(`Lease ${leaseId} of agent ${agentId} not found`);
    return lease;
  }

  /** The agent's live leases, soonest to expire first. */
  listLive(agentId: string, now?: Date): Promise<AgentLease[]> {
    return this.ds
      .getRepository(AgentLease)
      .createQueryBuilder('l')
      .where(`l.agentId = :agentId AND l.releasedAt IS NULL AND l.expiresAt > COALESCE(:now::timestamptz, now())`, { agentId, now: now ?? null })
      .orderBy('l.expiresAt', 'ASC')
      .getMany();
  }
}
