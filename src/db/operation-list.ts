import type { DataSource, SelectQueryBuilder } from 'typeorm';
import { Operation, type OperationStatus, type OperationType } from '../entities';

export interface OperationListQuery {
  limit: number;
  status?: OperationStatus[];
  type?: OperationType[];
  agentId?: string;
  /** Only operations requested at or after this time. */
  since?: Date;
  /** Id of the last operation of the previous page: the page continues after it. */
  after?: string;
}

export interface OperationListPage {
  items: Operation[];
  /** Whether another page follows the last item. */
  more: boolean;
}

/**
 * The operations listing, newest first, keyset-paged on (requested_at, id). A read model beside
 * the ledger's repository: it only reads, and each filter has an index that yields rows in page
 * order (idx_operations_requested, idx_operations_status_requested, idx_operations_agent_requested).
 */
export class OperationList {
  private readonly ds: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.ds = deps.dataSource;
  }

  async list(query: OperationListQuery): Promise<OperationListPage> {
    const rows = await this.query(query).getMany();
    return { items: rows.slice(0, query.limit), more: rows.length > query.limit };
  }

  /** The SELECT behind list(), one row more than a page; separate so its plan can be inspected. */
  query(query: OperationListQuery): SelectQueryBuilder<Operation> {
    const qb = this.ds.getRepository(Operation).createQueryBuilder('o');
    if (query.status && query.status.length > 0) qb.andWhere('o.status IN (:...statuses)', { statuses: query.status });
    if (query.type && query.type.length > 0) qb.andWhere('o.type IN (:...types)', { types: query.type });
    if (query.agentId !== undefined) qb.andWhere('o.agent_id = :agentId', { agentId: query.agentId });
    if (query.since !== undefined) qb.andWhere('o.requested_at >= :since', { since: query.since });
    if (query.after !== undefined) {
      // Compared in SQL, not through a JS Date, so microsecond timestamps never skip or repeat a row.
      // An id that names no operation ends the listing (the row comparison with NULL is never true).
      qb.andWhere(
        `(o.requested_at, o.id) < (SELECT c.requested_at, c.id FROM ${qb.escape(this.ds.getMetadata(Operation).tableName)} c WHERE c.id = :after)`,
        { after: query.after },
      );
    }
    return qb.orderBy('o.requested_at', 'DESC').addOrderBy('o.id', 'DESC').take(query.limit + 1);
  }
}
