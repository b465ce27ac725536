import { type DataSource, IsNull } from 'typeorm';
import { Agent, Event, Instance, Operation, OwnershipFinding, type OwnedResourceType } from '../entities';
import { type Db, managerOf, quotedTable } from './transitions';
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

export class OwnershipFindingRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  /**
   * The audit event of one destructive call (or refusal), in one statement: every stop writes one, so
   * the subject is looked up inside the INSERT rather than by a read per row first.
   */
  async recordAudit(entry: AuditEntry, db: Db = this.dataSource): Promise<void> {
    const m = managerOf(db);
    const table = (target: { new (): unknown }) => quotedTable(m.connection.getMetadata(target));
    const events = m.connection.getMetadata(Event);
    const entityType = `${events.schema ? `"${events.schema}".` : ''}"${events.findColumnWithPropertyName('entityType')!.enumName}"`;
    const [instanceId, agentId, operationId] = [uuidOrNull(entry.instanceId), uuidOrNull(entry.agentId), uuidOrNull(entry.operationId)];
    if (!instanceId && !agentId && !operationId) return;
    // The event goes on the instance when there is one, else the agent, else the operation; the
    // operation column is set only when that row exists (a foreign key).
    await m.query(
      `INSERT INTO ${quotedTable(events)} ("entity_type", "entity_id", "agent_id", "from_status", "to_status", "reason", "operation_id")
       SELECT s.entity_type::${entityType}, s.entity_id, s.agent_id, NULL, $4, $5, (SELECT "id" FROM ${table(Operation)} WHERE "id" = $3)
       FROM (
         SELECT 1 AS rank, 'instance' AS entity_type, "id" AS entity_id, "agent_id" FROM ${table(Instance)} WHERE "id" = $1
         UNION ALL SELECT 2, 'agent', "id", "id" FROM ${table(Agent)} WHERE "id" = $2
         UNION ALL SELECT 3, 'operation', "id", NULL FROM ${table(Operation)} WHERE "id" = $3
       ) s
       ORDER BY s.rank LIMIT 1`,
      [instanceId, agentId, operationId, entry.toStatus, entry.reason],
    );
  }

  /**
   * A refused call: one open finding per resource, agent and action (a retried operation refusing
   * the same resource again adds no second one) and its `needs_attention` event every time.
   */
  async recordRefusal(finding: NewOwnershipFinding, reason: string): Promise<OwnershipFinding> {
    return this.dataSource.transaction(async (m) => {
      const agentId = uuidOrNull(finding.agentId);
      const open = await m.findOne(OwnershipFinding, {
        where: {
          resourceType: finding.resourceType,
          resourceId: finding.resourceId,
          action: finding.action,
          agentId: agentId ?? IsNull(),
          resolvedAt: IsNull(),
        },
      });
      const row =
        open ??
        (await m.save(
          m.create(OwnershipFinding, {
            ...finding,
            agentId,
            instanceId: uuidOrNull(finding.instanceId),
            operationId: uuidOrNull(finding.operationId),
          }),
        ));
      await this.recordAudit({ ...finding, toStatus: 'needs_attention', reason }, m);
      return row;
    });
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
