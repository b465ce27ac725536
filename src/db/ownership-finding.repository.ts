import { type DataSource, IsNull } from 'typeorm';
import { Agent, Instance, Operation, OwnershipFinding, type EventEntityType, type OwnedResourceType } from '../entities';
import { type Db, inTransaction, managerOf, recordEvent } from './transitions';
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

  /** The audit event of one destructive call (or refusal). */
  async recordAudit(entry: AuditEntry, db: Db = this.dataSource): Promise<void> {
    await inTransaction(db, async (m) => {
      const subject = await this.subject(entry, m);
      if (!subject) return;
      await recordEvent(m, { ...subject, fromStatus: null, toStatus: entry.toStatus, reason: entry.reason });
    });
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

  /** The row the event goes on, and the agent and operation columns it may carry (foreign keys). */
  private async subject(
    s: AuditSubject,
    db: Db,
  ): Promise<{ entityType: EventEntityType; entityId: string; agentId: string | null; operationId: string | null } | null> {
    const m = managerOf(db);
    const [instanceId, agentId, opId] = [uuidOrNull(s.instanceId), uuidOrNull(s.agentId), uuidOrNull(s.operationId)];
    const instance = instanceId ? await m.findOne(Instance, { where: { id: instanceId }, select: { id: true, agentId: true } }) : null;
    const agent = !instance && agentId ? await m.findOne(Agent, { where: { id: agentId }, select: { id: true } }) : null;
    const operation = opId ? await m.findOne(Operation, { where: { id: opId }, select: { id: true } }) : null;
    const operationId = operation?.id ?? null;
    if (instance) return { entityType: 'instance', entityId: instance.id, agentId: instance.agentId, operationId };
    if (agent) return { entityType: 'agent', entityId: agent.id, agentId: agent.id, operationId };
    if (operationId) return { entityType: 'operation', entityId: operationId, agentId: null, operationId };
    return null;
  }
}
