import type { DataSource, ObjectLiteral } from 'typeorm';
import { Operation, type OperationStatus, type OperationType } from '../entities';
import { IdempotencyKeyConflictError, RecordNotFoundError } from './errors';
import { type Db, hydrate, managerOf, type PatchOf, quotedTable, recordEvent } from './transitions';
import { isUuid } from './uuid';

export interface NewOperation {
  type: OperationType;
  agentId?: string | null;
  provisioningJobId?: string | null;
  idempotencyKey?: string | null;
  queueJobId?: string | null;
  /** Audit reason for the creation event; default "<type> requested". */
  reason?: string;
}

export interface CreatedOperation {
  operation: Operation;
  /** false: the idempotency key already named this same request, and that operation is returned. */
  created: boolean;
}

export const ACTIVE_OPERATION_STATUSES = ['queued', 'running'] as const satisfies readonly OperationStatus[];

/**
 * Inserts an operation in status queued with its creation event. A repeated Idempotency-Key returns
 * the existing operation when it is the same request (type and agent), and throws
 * IdempotencyKeyConflictError when the key was used for something else.
 */
export async function insertOperation(db: Db, input: NewOperation): Promise<CreatedOperation> {
  const manager = managerOf(db);
  const table = quotedTable(manager.connection.getMetadata(Operation));
  const rows: ObjectLiteral[] = await manager.query(
    `INSERT INTO ${table} ("type", "agent_id", "provisioning_job_id", "idempotency_key", "queue_job_id")
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT ("idempotency_key") DO NOTHING
     RETURNING *`,
    [input.type, input.agentId ?? null, input.provisioningJobId ?? null, input.idempotencyKey ?? null, input.queueJobId ?? null],
  );
  if (rows.length === 1) {
    const operation = hydrate(manager, Operation, rows[0]!);
    await recordEvent(manager, {
      entityType: 'operation',
      entityId: operation.id,
      agentId: operation.agentId,
      fromStatus: null,
      toStatus: operation.status,
      reason: input.reason ?? `${input.type} requested`,
      operationId: operation.id,
    });
    return { operation, created: true };
  }
  // Only a conflicting idempotency key makes the insert return nothing.
  const existing = await manager.findOne(Operation, { where: { idempotencyKey: input.idempotencyKey! } });
  if (!existing) throw new Error(`operation insert returned no row for key ${input.idempotencyKey}`);
  if (existing.type !== input.type || existing.agentId !== (input.agentId ?? null)) {
    throw new IdempotencyKeyConflictError(input.idempotencyKey!, existing.id);
  }
  return { operation: existing, created: false };
}

export type OperationUpdate = Omit<PatchOf<'operation'>, 'startedAt' | 'finishedAt'>;

export class OperationRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  create(input: NewOperation, db: Db = this.dataSource): Promise<CreatedOperation> {
    return insertOperation(db, input);
  }

  async findById(id: string, db: Db = this.dataSource): Promise<Operation | null> {
    if (!isUuid(id)) return null;
    return managerOf(db).findOne(Operation, { where: { id } });
  }

  findByIdempotencyKey(key: string, db: Db = this.dataSource): Promise<Operation | null> {
    return managerOf(db).findOne(Operation, { where: { idempotencyKey: key } });
  }

  /** The newest queued or running operation of an agent (what GET /v1/agents/:id shows as running). */
  async findActiveByAgent(agentId: string, db: Db = this.dataSource): Promise<Operation | null> {
    if (!isUuid(agentId)) return null;
    const manager = managerOf(db);
    return manager
      .createQueryBuilder(Operation, 'o')
      .where('o.agentId = :agentId', { agentId })
      .andWhere('o.status IN (:...active)', { active: ACTIVE_OPERATION_STATUSES })
      .orderBy('o.requestedAt', 'DESC')
      .addOrderBy('o.id', 'DESC')
      .getOne();
  }

  async listByAgent(agentId: string, options: { limit?: number } = {}, db: Db = this.dataSource): Promise<Operation[]> {
    if (!isUuid(agentId)) return [];
    return managerOf(db).find(Operation, {
      where: { agentId },
      order: { requestedAt: 'DESC', id: 'DESC' },
      take: options.limit ?? 50,
    });
  }

  /**
   * Sets non-status columns (queue job id, attempts, progress, step, error). Status changes go
   * through transition() so they are guarded and audited.
   */
  async update(id: string, patch: OperationUpdate, db: Db = this.dataSource): Promise<Operation> {
    const manager = managerOf(db);
    if (!isUuid(id)) throw new RecordNotFoundError('operation', id);
    const result = await manager.update(Operation, { id }, patch);
    if (!result.affected) throw new RecordNotFoundError('operation', id);
    return (await manager.findOne(Operation, { where: { id } }))!;
  }

  /**
   * Best-effort progress from a worker: written only while the operation is running, so a late
   * report cannot overwrite a finished operation. Returns whether it was written.
   */
  async reportProgress(
    id: string,
    progress: number,
    currentStep?: string | null,
    db: Db = this.dataSource,
  ): Promise<boolean> {
    if (!isUuid(id)) return false;
    const clamped = Math.max(0, Math.min(100, Math.round(progress)));
    const patch: OperationUpdate = { progress: clamped };
    if (currentStep !== undefined) patch.currentStep = currentStep;
    const result = await managerOf(db).update(Operation, { id, status: 'running' }, patch);
    return (result.affected ?? 0) > 0;
  }
}
