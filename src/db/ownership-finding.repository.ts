import { type DataSource, IsNull } from 'typeorm';
import { Agent, Event, Instance, Operation, OwnershipFinding, SYSTEM_ACTOR, type EventEntityType, type OwnedResourceType } from '../entities';
import { NotFoundError, StateConflictError } from '../errors';
import { type Db, hydrate, inTransaction, managerOf, quotedTable, recordEvent, returningRows } from './transitions';
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
