import { type DataSource, IsNull } from 'typeorm';
import { OwnershipFinding, type OwnedResourceType } from '../entities';
import { type Db, managerOf } from './transitions';
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
   * statement: the finding is inserted unless an open one exists, without reading it first.
   */
  async recordRefusal(finding: NewOwnershipFinding, reason: string): Promise<void> {
    const params = auditParams({ ...finding, toStatus: 'needs_attention', reason });
    await this.dataSource.query(
      `${SUBJECT_CTE},
       finding AS (
         INSERT INTO ownership_findings
           (resource_type, resource_id, resource_name, action, operation, operation_id, agent_id, instance_id, matched, missing)
         SELECT $6::varchar, $7::varchar, $8::varchar, $9::varchar, $10::varchar, $3::uuid, $2::uuid, $1::uuid, $11::jsonb, $12::jsonb
         WHERE NOT EXISTS (
           SELECT 1 FROM ownership_findings f
           WHERE f.resource_type = $6::varchar AND f.resource_id = $7::varchar AND f.action = $9::varchar
             AND f.agent_id IS NOT DISTINCT FROM $2::uuid AND f.resolved_at IS NULL
         )
       )
       ${INSERT_EVENT}`,
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
  }

  /** Open findings, oldest first. */
  listOpen(limit = 100, db: Db = this.dataSource): Promise<OwnershipFinding[]> {
    return managerOf(db).find(OwnershipFinding, { where: { resolvedAt: IsNull() }, order: { createdAt: 'ASC', id: 'ASC' }, take: limit });
  }

  listByAgent(agentId: string, db: Db = this.dataSource): Promise<OwnershipFinding[]> {
    if (!isUuid(agentId)) return Promise.resolve([]);
    return managerOf(db).find(OwnershipFinding, { where: { agentId }, order: { createdAt: 'ASC', id: 'ASC' } });
  }

  async resolve(id: string, resolution: string, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).update(OwnershipFinding, { id, resolvedAt: IsNull() }, { resolvedAt: new Date(), resolution });
  }
}
