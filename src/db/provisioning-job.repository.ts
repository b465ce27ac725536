import type { DataSource } from 'typeorm';
import { In } from 'typeorm';
import { Operation, ProvisioningJob, type ProvisioningJobStatus } from '../entities';
import { RecordNotFoundError } from './errors';
import { type Db, managerOf, type PatchOf, quotedTable } from './transitions';
import { isUuid } from './uuid';

export type ProvisioningJobUpdate = Omit<PatchOf<'provisioning_job'>, 'startedAt' | 'finishedAt'>;

export class ProvisioningJobRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  /** Jobs still live whose provision operation failed more than `graceSeconds` ago (a crash between the two writes). */
  async listLiveWithFailedProvision(
    graceSeconds: number,
    db: Db = this.dataSource,
  ): Promise<Array<{ provisioningJobId: string; error: string | null; failedStep: string | null }>> {
    const rows: Array<{ provisioning_job_id: string; error: string | null; failed_step: string | null }> = await managerOf(db).query(
      `SELECT o.provisioning_job_id, o.error, o.failed_step
         FROM ${this.table(Operation)} o
         JOIN ${this.table(ProvisioningJob)} pj ON pj.id = o.provisioning_job_id
        WHERE o.type = 'provision' AND o.status = 'failed' AND pj.status IN ('queued', 'running')
          AND o.finished_at < now() - make_interval(secs => $1)
        LIMIT 500`,
      [graceSeconds],
    );
    return rows.map((r) => ({ provisioningJobId: r.provisioning_job_id, error: r.error, failedStep: r.failed_step }));
  }

  /** Failed jobs with no rollback under their fixed key, oldest first. */
  async listFailedWithoutRollback(db: Db = this.dataSource): Promise<string[]> {
    const rows: Array<{ id: string }> = await managerOf(db).query(
      `SELECT pj.id FROM ${this.table(ProvisioningJob)} pj
        WHERE pj.status = 'failed'
          AND NOT EXISTS (SELECT 1 FROM ${this.table(Operation)} r WHERE r.idempotency_key = 'rollback:' || pj.id::text)
        ORDER BY pj.updated_at
        LIMIT 500`,
    );
    return rows.map((r) => r.id);
  }

  private table(target: typeof Operation | typeof ProvisioningJob): string {
    return quotedTable(this.dataSource.getMetadata(target));
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

  /** One more attempt of a job that is already running (a redelivered or retried provision). */
  async incrementAttempts(id: string, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).increment(ProvisioningJob, { id, status: 'running' }, 'attempts', 1);
  }

  /** Keeps the reason a running job's attempt failed; the status is left to retries and rollback. */
  async recordFailure(id: string, failure: { error: string; failedStep: string }, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).update(ProvisioningJob, { id, status: 'running' }, failure);
  }

  /** Jobs of an instance that are still queued or running. */
  listOpenByInstance(instanceId: string, db: Db = this.dataSource): Promise<ProvisioningJob[]> {
    return managerOf(db).find(ProvisioningJob, { where: { instanceId, status: In(['queued', 'running']) } });
  }

  /** Ids of every job queued or running. */
  async activeIds(db: Db = this.dataSource): Promise<Set<string>> {
    const rows = await managerOf(db).find(ProvisioningJob, { where: { status: In(['queued', 'running']) }, select: { id: true } });
    return new Set(rows.map((r) => r.id));
  }

  /** Remembers an auth key made for one of the job's attempts, before any server can use it. */
  async addAuthKey(id: string, authKeyId: string, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).query(`UPDATE provisioning_jobs SET auth_key_ids = array_append(auth_key_ids, $2) WHERE id = $1`, [
      id,
      authKeyId,
    ]);
  }

  async authKeyIds(id: string, db: Db = this.dataSource): Promise<string[]> {
    const [row] = (await managerOf(db).query(`SELECT auth_key_ids FROM provisioning_jobs WHERE id = $1`, [id])) as Array<{
      auth_key_ids: string[];
    }>;
    return row?.auth_key_ids ?? [];
  }

  /** Forgets revoked auth keys (keys added meanwhile stay). */
  async forgetAuthKeys(id: string, authKeyIds: readonly string[], db: Db = this.dataSource): Promise<void> {
    await managerOf(db).query(
      `UPDATE provisioning_jobs SET auth_key_ids = ARRAY(SELECT k FROM unnest(auth_key_ids) AS k WHERE k <> ALL($2::varchar[])) WHERE id = $1`,
      [id, authKeyIds],
    );
  }
}
