import type { DataSource } from 'typeorm';
import { Event, type EventEntityType } from '../entities';
import { type Db, managerOf } from './transitions';
import { isUuid } from './uuid';

export interface EventPage {
  limit?: number;
  /** Return events with an id greater than this one (ids grow in insertion order). */
  afterId?: string;
}

export class EventRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  /** Every event of an agent and of its instances, jobs and operations, oldest first. */
  async listForAgent(agentId: string, page: EventPage = {}, db: Db = this.dataSource): Promise<Event[]> {
    if (!isUuid(agentId)) return [];
    const qb = managerOf(db)
      .createQueryBuilder(Event, 'e')
      .where('e.agentId = :agentId', { agentId })
      .orderBy('e.at', 'ASC')
      .addOrderBy('e.id', 'ASC')
      .take(page.limit ?? 200);
    if (page.afterId !== undefined) qb.andWhere('e.id > :afterId', { afterId: page.afterId });
    return qb.getMany();
  }

  async listForEntity(entityType: EventEntityType, entityId: string, db: Db = this.dataSource): Promise<Event[]> {
    if (!isUuid(entityId)) return [];
    return managerOf(db).find(Event, { where: { entityType, entityId }, order: { at: 'ASC', id: 'ASC' } });
  }

  /** How many events of a row have a reason starting with `prefix`. */
  async countWithReason(entityType: EventEntityType, entityId: string, prefix: string, db: Db = this.dataSource): Promise<number> {
    if (!isUuid(entityId)) return 0;
    return managerOf(db)
      .createQueryBuilder(Event, 'e')
      .where('e.entityType = :entityType AND e.entityId = :entityId', { entityType, entityId })
      .andWhere('starts_with(e.reason, :prefix)', { prefix })
      .getCount();
  }

  /** The newest event that moved the row into `toStatus`, or null. */
  latestMoveInto(entityType: EventEntityType, entityId: string, toStatus: string, db: Db = this.dataSource): Promise<Event | null> {
    return managerOf(db).findOne(Event, { where: { entityType, entityId, toStatus }, order: { id: 'DESC' } });
  }

  /**
   * Events with an id above `afterId` (all agents, or one), in id order: the replay of the event
   * stream. Read as plain rows, not entities: a replay reads page after page for every client that
   * catches up, and building entities would cost more than the rows themselves.
   */
  async listAfter(afterId: string, opts: { agentId?: string; limit: number }): Promise<Event[]> {
    const byAgent = opts.agentId !== undefined;
    return this.dataSource.query(
      `SELECT e.id::text AS "id", e.entity_type AS "entityType", e.entity_id AS "entityId", e.agent_id AS "agentId",
              e.from_status AS "fromStatus", e.to_status AS "toStatus", e.reason, e.operation_id AS "operationId",
              e.actor, e.at
         FROM events e
        WHERE e.id > $1 ${byAgent ? 'AND e.agent_id = $3' : ''}
        ORDER BY e.id
        LIMIT $2`,
      byAgent ? [afterId, opts.limit, opts.agentId] : [afterId, opts.limit],
    );
  }

  /** The events with these ids that exist, in id order. */
  async findByIds(ids: readonly string[]): Promise<Event[]> {
    if (ids.length === 0) return [];
    return this.dataSource.manager
      .createQueryBuilder(Event, 'e')
      .where('e.id = ANY(:ids::bigint[])', { ids: [...ids] })
      .orderBy('e.id', 'ASC')
      .getMany();
  }

  /** The id of the newest event ('0' when there is none). */
  async latestId(): Promise<string> {
    const row = await this.dataSource.manager.createQueryBuilder(Event, 'e').select('max(e.id)::text', 'id').getRawOne<{ id: string | null }>();
    return row?.id ?? '0';
  }
}
