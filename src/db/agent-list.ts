import type { DataSource, SelectQueryBuilder } from 'typeorm';
import { Agent, type AgentStatus } from '../entities';

export interface AgentListQuery {
  limit: number;
  status?: AgentStatus[];
  /** Exact name. */
  name?: string;
  /** Every one of these labels (AND). */
  labels?: Record<string, string>;
  /** Id of the last agent of the previous page: the page continues after it. */
  after?: string;
  offset?: number;
}

/**
 * The agents listing, newest first, keyset-paged on (created_at, id), like OperationList. Each
 * filter has an index: idx_agents_created, idx_agents_status_created and idx_agents_name_created
 * yield rows in page order; labels use the GIN index idx_agents_labels (`labels @> {...}`).
 */
export class AgentList {
  constructor(private readonly deps: { dataSource: DataSource }) {}

  async list(query: AgentListQuery): Promise<{ items: Agent[]; more: boolean }> {
    const rows = await this.query(query).getMany();
    return { items: rows.slice(0, query.limit), more: rows.length > query.limit };
  }

  /** The SELECT behind list(), one row more than a page; separate so its plan can be inspected. */
  query(query: AgentListQuery): SelectQueryBuilder<Agent> {
    const qb = this.deps.dataSource.getRepository(Agent).createQueryBuilder('a');
    if (query.status && query.status.length > 0) {
      if (query.status.length === 1) qb.andWhere('a.status = :status', { status: query.status[0] });
      else qb.andWhere('a.status IN (:...statuses)', { statuses: query.status });
    }
    if (query.name !== undefined) qb.andWhere('a.name = :name', { name: query.name });
    if (query.labels && Object.keys(query.labels).length > 0) {
      qb.andWhere('a.labels @> CAST(:labels AS jsonb)', { labels: JSON.stringify(query.labels) });
    }
    if (query.after !== undefined) {
      // Compared in SQL, not through a JS Date, so microsecond timestamps never skip or repeat a row.
      qb.andWhere(
        `(a.created_at, a.id) < (SELECT c.created_at, c.id FROM ${qb.escape(this.deps.dataSource.getMetadata(Agent).tableName)} c WHERE c.id = :after)`,
        { after: query.after },
      );
    }
    qb.orderBy('a.created_at', 'DESC').addOrderBy('a.id', 'DESC').limit(query.limit + 1);
    if (query.offset !== undefined) qb.offset(query.offset);
    return qb;
  }
}
