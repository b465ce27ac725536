import { type DataSource, IsNull } from 'typeorm';
import { Agent, Event, Operation, OwnershipFinding, SYSTEM_ACTOR, type OwnedResourceType } from '../entities';
import { NotFoundError, StateConflictError } from '../errors';
import { type Db, hydrate, inTransaction, managerOf, quotedTable, returningRows } from './transitions';
import { isUuid } from './uuid';

/**
 * Who a guarded cloud call was for. The audit event is written against the instance when there is
 * one, else the agent, else the operation (so GET /v1/agents/:id/events shows it whenever an agent
 * of this database is involved); ids that name no row here (a label's agent id) are left out.
 */
export interface AuditSubject {
  operationId?: string | null;
  agentId?: string | null;
  instanceId?: string | null;
}

export interface AuditEntry extends AuditSubject {
  /** What happened to the resource: server_deleted, device_deleted, …, or needs_attention. */
  toStatus: string;
  reason: string;
}

export interface NewOwnershipFinding extends AuditSubject {
  resourceType: OwnedResourceType;
  resourceId: string;
  resourceName: string | null;
  action: string;
  operation: string;
  matched: string[];
  missing: string[];
}

export type FindingStatus = 'open' | 'resolved';

export interface FindingListQuery {
  limit: number;
  status?: FindingStatus;
  /** Resource types (server, device, auth_key, image). */
  kind?: OwnedResourceType[];
  /** Id of the last finding of the previous page: the page continues after it. */
  after?: string;
}

/** An operator tried to resolve a finding that is resolved already. */
export class FindingResolvedError extends StateConflictError {
  override readonly name = 'FindingResolvedError';
  constructor(readonly finding: OwnershipFinding) {
    super(`Finding ${finding.id} was resolved already (at ${finding.resolvedAt?.toISOString() ?? '?'} by ${finding.resolvedBy ?? 'system'}).`);
  }
}

/** An id that can name a row here, or null (a label may carry anything). */
const uuidOrNull = (v: string | null | undefined): string | null => (v && isUuid(v) ? v : null);

/**
 * The row an audit event goes on ($1 instance, $2 agent, $3 operation): the instance when it
 * exists, else the agent, else the operation; ids naming no row here are left out (foreign keys).
 */
const SUBJECT_CTE = `
  WITH i AS (SELECT id, agent_id FROM instances WHERE id = $1::uuid),
       a AS (SELECT id FROM agents WHERE id = $2::uuid),
       o AS (SELECT id FROM operations WHERE id = $3::uuid),
       subject AS (
         SELECT 'instance' AS entity_type, id AS entity_id, agent_id, 1 AS rank FROM i
         UNION ALL SELECT 'agent', id, id, 2 FROM a
         UNION ALL SELECT 'operation', id, NULL::uuid, 3 FROM o
         ORDER BY rank LIMIT 1
       )`;

/** The event on that row ($4 to_status, $5 reason); nothing when no row matched. */
const INSERT_EVENT = `
  INSERT INTO events (entity_type, entity_id, agent_id, from_status, to_status, reason, operation_id)
  SELECT s.entity_type::event_entity_type, s.entity_id, s.agent_id, NULL, $4::varchar, $5::text, (SELECT id FROM o)
  FROM subject s`;

function auditParams(e: AuditEntry): unknown[] {
  return [uuidOrNull(e.instanceId), uuidOrNull(e.agentId), uuidOrNull(e.operationId), e.toStatus, e.reason];
}

/** What a refused call was, as every view of a finding shows it (the API's, the reconcile report's). */
export function findingFacts(f: OwnershipFinding) {
  return {
    resourceType: f.resourceType,
    resourceId: f.resourceId,
    resourceName: f.resourceName,
    action: f.action,
    operation: f.operation,
    operationId: f.operationId,
    agentId: f.agentId,
    instanceId: f.instanceId,
    matched: f.matched,
    missing: f.missing,
  };
}

export class OwnershipFindingRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  /**
   * The audit event of one destructive call (or refusal): one INSERT that finds its row itself, so
   * the guard's audit costs a stop or a destroy one statement, not a read and a write.
   */
  async recordAudit(entry: AuditEntry, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).query(`${SUBJECT_CTE} ${INSERT_EVENT}`, auditParams(entry));
  }

  /**
   * A refused call: one open finding per resource, agent and action (a retried operation refusing
   * the same resource again adds no second one) and its `needs_attention` event every time. One
   * statement: the finding is inserted unless an open one exists; answers the open finding's id.
   */
  async recordRefusal(finding: NewOwnershipFinding, reason: string): Promise<{ id: string }> {
    const params = auditParams({ ...finding, toStatus: 'needs_attention', reason });
    const rows: Array<{ id: string }> = await this.dataSource.query(
      `${SUBJECT_CTE},
       open AS (
         SELECT f.id FROM ownership_findings f
         WHERE f.resource_type = $6::varchar AND f.resource_id = $7::varchar AND f.action = $9::varchar
           AND f.agent_id IS NOT DISTINCT FROM $2::uuid AND f.resolved_at IS NULL
       ),
       finding AS (
         INSERT INTO ownership_findings
           (resource_type, resource_id, resource_name, action, operation, operation_id, agent_id, instance_id, matched, missing)
         SELECT $6::varchar, $7::varchar, $8::varchar, $9::varchar, $10::varchar, $3::uuid, $2::uuid, $1::uuid, $11::jsonb, $12::jsonb
         WHERE NOT EXISTS (SELECT 1 FROM open)
         RETURNING id
       ),
       logged AS (${INSERT_EVENT})
       SELECT id FROM finding UNION ALL SELECT id FROM open LIMIT 1`,
      [
        ...params,
        finding.resourceType,
        finding.resourceId,
        finding.resourceName,
        finding.action,
        finding.operation,
        JSON.stringify(finding.matched),
        JSON.stringify(finding.missing),
      ],
    );
    return { id: rows[0]!.id };
  }

  /** Open findings, oldest first. */
  listOpen(limit = 100, db: Db = this.dataSource): Promise<OwnershipFinding[]> {
    return managerOf(db).find(OwnershipFinding, { where: { resolvedAt: IsNull() }, order: { createdAt: 'ASC', id: 'ASC' }, take: limit });
  }

  listByAgent(agentId: string, db: Db = this.dataSource): Promise<OwnershipFinding[]> {
    if (!isUuid(agentId)) return Promise.resolve([]);
    return managerOf(db).find(OwnershipFinding, { where: { agentId }, order: { createdAt: 'ASC', id: 'ASC' } });
  }

  /** Findings newest first, keyset-paged on (created_at, id) like the operations listing. */
  async list(query: FindingListQuery, db: Db = this.dataSource): Promise<{ items: OwnershipFinding[]; more: boolean }> {
    const qb = managerOf(db).getRepository(OwnershipFinding).createQueryBuilder('f');
    if (query.status === 'open') qb.andWhere('f.resolved_at IS NULL');
    if (query.status === 'resolved') qb.andWhere('f.resolved_at IS NOT NULL');
    if (query.kind && query.kind.length > 0) qb.andWhere('f.resource_type IN (:...kinds)', { kinds: query.kind });
    if (query.after !== undefined) {
      // An id that names no finding ends the listing (the row comparison with NULL is never true).
      const table = quotedTable(managerOf(db).connection.getMetadata(OwnershipFinding));
      qb.andWhere(`(f.created_at, f.id) < (SELECT c.created_at, c.id FROM ${table} c WHERE c.id = :after)`, { after: query.after });
    }
    const rows = await qb.orderBy('f.created_at', 'DESC').addOrderBy('f.id', 'DESC').take(query.limit + 1).getMany();
    return { items: rows.slice(0, query.limit), more: rows.length > query.limit };
  }

  get(id: string, db: Db = this.dataSource): Promise<OwnershipFinding | null> {
    if (!isUuid(id)) return Promise.resolve(null);
    return managerOf(db).findOne(OwnershipFinding, { where: { id } });
  }

  /**
   * Closes an open finding: one guarded update (a finding is resolved once, by whoever comes first)
   * and its event (`open` → `resolved`, entity type `finding`, on the agent's timeline when the agent
   * is this database's), in one transaction. The event's trigger announces it on the event stream
   * and writes the `finding.resolved` webhook deliveries. RecordNotFoundError for an unknown id,
   * FindingResolvedError when it was resolved already.
   */
  async resolve(
    id: string,
    resolution: string,
    opts: { actor?: string; db?: Db } = {},
  ): Promise<OwnershipFinding> {
    const actor = opts.actor ?? SYSTEM_ACTOR;
    return inTransaction(opts.db ?? this.dataSource, async (m) => {
      const table = quotedTable(m.connection.getMetadata(OwnershipFinding));
      const rows: Record<string, unknown>[] = isUuid(id)
        ? await m.query(
            returningRows(
              `UPDATE ${table} SET "resolved_at" = now(), "resolution" = $2, "resolved_by" = $3 WHERE "id" = $1 AND "resolved_at" IS NULL RETURNING *`,
            ),
            [id, resolution, actor],
          )
        : [];
      const raw = rows[0];
      if (!raw) {
        const current = await this.get(id, m);
        if (!current) throw new NotFoundError(`Finding ${id} not found`);
        throw new FindingResolvedError(current);
      }
      const row = hydrate(m, OwnershipFinding, raw);
      const agent = row.agentId ? await m.findOne(Agent, { where: { id: row.agentId }, select: { id: true } }) : null;
      const operation = row.operationId ? await m.findOne(Operation, { where: { id: row.operationId }, select: { id: true } }) : null;
      await m.insert(Event, {
        entityType: 'finding',
        entityId: row.id,
        agentId: agent?.id ?? null,
        fromStatus: 'open',
        toStatus: 'resolved',
        reason: `${row.action} of ${row.resourceType} ${row.resourceId} resolved: ${resolution}`,
        operationId: operation?.id ?? null,
        actor,
      });
      return row;
    });
  }
}
