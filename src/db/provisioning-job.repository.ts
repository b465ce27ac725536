import type { DataSource } from 'typeorm';
import { In } from 'typeorm';
import { ProvisioningJob, type ProvisioningJobStatus } from '../entities';
import { RecordNotFoundError } from './errors';
import { type Db, managerOf, type PatchOf } from './transitions';
import { isUuid } from './uuid';

export type ProvisioningJobUpdate = Omit<PatchOf<'provisioning_job'>, 'startedAt' | 'finishedAt'>;

export class ProvisioningJobRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  async findById(id: string, db: Db = this.dataSource): Promise<ProvisioningJob | null> {
    if (!isUuid(id)) return null;
    return managerOf(db).findOne(ProvisioningJob, { where: { id } });
  }

  async findLatestByAgent(agentId: string, db: Db = this.dataSource): Promise<ProvisioningJob | null> {
    if (!isUuid(agentId)) return null;
    return managerOf(db).findOne(ProvisioningJob, { where: { agentId }, order: { createdAt: 'DESC', id: 'DESC' } });
  }

  async findByInstance(instanceId: string, db: Db = this.dataSource): Promise<ProvisioningJob | null> {
    if (!isUuid(instanceId)) return null;
    return managerOf(db).findOne(ProvisioningJob, { where: { instanceId }, order: { createdAt: 'DESC', id: 'DESC' } });
  }

  /** Oldest first; e.g. the start-up sweep looks for `failed` jobs that were never rolled back. */
  listByStatus(
    statuses: readonly ProvisioningJobStatus[],
    options: { limit?: number } = {},
    db: Db = this.dataSource,
  ): Promise<ProvisioningJob[]> {
    return managerOf(db).find(ProvisioningJob, {
      where: { status: In([...statuses]) },
      order: { updatedAt: 'ASC', id: 'ASC' },
      take: options.limit ?? 100,
    });
  }

  /** Non-status columns (attempts, error, failed step); status changes go through transition(). */
  async update(id: string, patch: ProvisioningJobUpdate, db: Db = this.dataSource): Promise<ProvisioningJob> {
    if (!isUuid(id)) throw new RecordNotFoundError('provisioning_job', id);
    const manager = managerOf(db);
    const result = await manager.update(ProvisioningJob, { id }, patch);
    if (!result.affected) throw new RecordNotFoundError('provisioning_job', id);
    return (await manager.findOne(ProvisioningJob, { where: { id } }))!;
  }
}
