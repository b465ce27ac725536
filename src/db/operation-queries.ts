import { In, type DataSource } from 'typeorm';
import { Operation, type OperationType } from '../entities';
import { type Db, managerOf } from './transitions';
import { isUuid } from './uuid';

/**
 * Reads of the operations table the reconciler needs beyond OperationRepository's. A separate file
 * so it can be folded into the operation ledger's repository without touching the callers' logic.
 */
export class OperationQueries {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  /** Every operation queued or running. */
  listActive(db: Db = this.dataSource): Promise<Operation[]> {
    return managerOf(db).find(Operation, { where: { status: In(['queued', 'running']) } });
  }

  /** The agent's newest operation of this type, in any status. */
  async latestOfAgent(agentId: string, type: OperationType, db: Db = this.dataSource): Promise<Operation | null> {
    if (!isUuid(agentId)) return null;
    return managerOf(db).findOne(Operation, { where: { agentId, type }, order: { requestedAt: 'DESC' } });
  }

  /** The newest provision operation of a provisioning job. */
  async latestProvisionOfJob(provisioningJobId: string, db: Db = this.dataSource): Promise<Operation | null> {
    if (!isUuid(provisioningJobId)) return null;
    return managerOf(db).findOne(Operation, { where: { provisioningJobId, type: 'provision' }, order: { requestedAt: 'DESC' } });
  }

  /** The newest queued operation of a type that has no agent (e.g. a requested reconcile pass). */
  latestQueued(type: OperationType, db: Db = this.dataSource): Promise<Operation | null> {
    return managerOf(db).findOne(Operation, { where: { type, status: 'queued' }, order: { requestedAt: 'DESC' } });
  }
}
