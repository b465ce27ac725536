import { CannotExecuteNotConnectedError, type DataSource, type ObjectLiteral } from 'typeorm';
import { Agent, Event, Instance, Operation, TERMINAL_INSTANCE_STATUSES, type OperationStatus, type OperationType } from '../entities';
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

export type AgentCommandType = Extract<OperationType, 'stop' | 'start' | 'destroy'>;

/** What a stop/start/destroy request found; only `created` wrote anything. */
export type AgentCommandOutcome =
  | { outcome: 'created'; operation: Operation }
  /** The idempotency key names an earlier operation (of any agent or type: the caller compares). */
  | { outcome: 'replay'; operation: Operation }
  | { outcome: 'agent_not_found' }
  | { outcome: 'agent_destroyed' }
  | { outcome: 'destroy_pending'; operationId: string }
  | { outcome: 'same_pending'; operationId: string }
  | { outcome: 'no_running_instance' }
  | { outcome: 'no_stopped_instance' }
  /** A request on another agent took the idempotency key between the check and the insert. */
  | { outcome: 'key_taken' };

export interface AgentCommandInput {
  type: AgentCommandType;
  agentId: string;
  /** Chosen by the caller, so the queue job id can be derived from it and stored in the same INSERT. */
  operationId: string;
  queueJobId: string;
  idempotencyKey: string | null;
}

const PENDING_COMMAND_STATUSES: readonly OperationStatus[] = ACTIVE_OPERATION_STATUSES;
const AGENT_COMMANDS: readonly AgentCommandType[] = ['stop', 'start', 'destroy'];
// Only these characters are ever written into SQL text; anything else goes as a parameter or is refused.
const INLINE_SAFE = /^[A-Za-z0-9 _.:-]*$/;

/**
 * Placeholders for one statement: `$n` parameters, or — for the one-round-trip path — literals,
 * which are only ever ids this code generated or validated and fixed words, never client text.
 */
class SqlValues {
  readonly values: unknown[] = [];
  constructor(private readonly inline: boolean) {}

  add(value: string | null, cast: string): string {
    if (!this.inline) return `$${this.values.push(value)}::${cast}`;
    if (value === null) return `NULL::${cast}`;
    if (!INLINE_SAFE.test(value)) throw new Error(`refusing to write ${JSON.stringify(value)} into SQL text`);
    return `'${value}'::${cast}`;
  }

  list(values: readonly string[]): string {
    return `(${values.map((v) => this.add(v, 'text')).join(', ')})`;
  }
}

function agentCommandSql(
  metadata: { operations: string; events: string; agents: string; instances: string; operationType: string },
  v: SqlValues,
  input: AgentCommandInput,
): { lock: string; command: string } {
  const agent = v.add(input.agentId, 'uuid');
  const type = v.add(input.type, 'text');
  const lock = `SELECT 1 FROM ${metadata.agents} WHERE "id" = ${agent} FOR UPDATE`;
  // Checked in this order, as the request would be answered: unknown agent, repeated key, destroyed
  // agent, destroy under way, same command under way, instance in the wrong state.
  const command = `
    WITH agent AS (
      SELECT "status"::text AS status FROM ${metadata.agents} WHERE "id" = ${agent}
    ), prior AS (
      SELECT * FROM ${metadata.operations} WHERE "idempotency_key" = ${v.add(input.idempotencyKey, 'varchar')}
    ), pending AS (
      SELECT "id", "type"::text AS type, "requested_at" FROM ${metadata.operations}
      WHERE "agent_id" = ${agent} AND "status"::text IN ${v.list(PENDING_COMMAND_STATUSES)}
        AND "type"::text IN ${v.list(AGENT_COMMANDS)}
    ), live AS (
      SELECT "status"::text AS status FROM ${metadata.instances}
      WHERE "agent_id" = ${agent} AND NOT ("status"::text IN ${v.list(TERMINAL_INSTANCE_STATUSES)})
      ORDER BY "created_at" DESC, "id" DESC LIMIT 1
    ), verdict AS (
      SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM agent) THEN 'agent_not_found'
        WHEN EXISTS (SELECT 1 FROM prior) THEN 'replay'
        WHEN (SELECT status FROM agent) = 'destroyed' THEN 'agent_destroyed'
        WHEN EXISTS (SELECT 1 FROM pending WHERE type = 'destroy') THEN 'destroy_pending'
        WHEN ${type} = 'destroy' THEN 'ok'
        WHEN EXISTS (SELECT 1 FROM pending WHERE type = ${type}) THEN 'same_pending'
        WHEN ${type} = 'stop' AND (SELECT status FROM live) IS DISTINCT FROM 'running' THEN 'no_running_instance'
        WHEN ${type} = 'start' AND (SELECT status FROM live) IS DISTINCT FROM 'stopped' THEN 'no_stopped_instance'
        ELSE 'ok'
      END AS outcome
    ), inserted AS (
      INSERT INTO ${metadata.operations} ("id", "type", "agent_id", "idempotency_key", "queue_job_id")
      SELECT ${v.add(input.operationId, 'uuid')}, ${type}::${metadata.operationType}, ${agent},
        ${v.add(input.idempotencyKey, 'varchar')}, ${v.add(input.queueJobId, 'varchar')}
      FROM verdict WHERE outcome = 'ok'
      ON CONFLICT ("idempotency_key") DO NOTHING
      RETURNING *
    ), logged AS (
      INSERT INTO ${metadata.events} ("entity_type", "entity_id", "agent_id", "from_status", "to_status", "reason", "operation_id")
      SELECT 'operation', "id", "agent_id", NULL, "status"::text, ${v.add(`${input.type} requested`, 'text')}, "id" FROM inserted
    )
    SELECT verdict.outcome AS "__outcome",
      (SELECT p."id" FROM pending p
        WHERE p.type = CASE WHEN verdict.outcome = 'destroy_pending' THEN 'destroy' ELSE ${type} END
        ORDER BY p."requested_at" DESC LIMIT 1) AS "__conflict_id",
      o.*
    FROM verdict LEFT JOIN (SELECT * FROM inserted UNION ALL SELECT * FROM prior) o ON true`;
  return { lock, command };
}

/**
 * A stop, start or destroy request: checks whether the agent's state allows it and, if so, inserts
 * the queued operation (with its queue job id, so nobody ever sees it without one) and its creation
 * event. The agent row is locked first, in its own statement, so the checks read a snapshot taken
 * after any command that held the lock before committed: two requests cannot both pass them.
 *
 * Without an idempotency key the lock and the command go in one round trip (two statements of one
 * simple query run as one implicit transaction); with a key, which is client text, they run as
 * parameterised statements in a transaction.
 */
export async function requestAgentCommand(dataSource: DataSource, input: AgentCommandInput): Promise<AgentCommandOutcome> {
  if (!isUuid(input.agentId)) return { outcome: 'agent_not_found' };
  const manager = dataSource.manager;
  const metadata = {
    operations: quotedTable(dataSource.getMetadata(Operation)),
    events: quotedTable(dataSource.getMetadata(Event)),
    agents: quotedTable(dataSource.getMetadata(Agent)),
    instances: quotedTable(dataSource.getMetadata(Instance)),
    operationType: enumTypeName(dataSource, Operation, 'type'),
  };
  const args = { ...input, agentId: input.agentId.toLowerCase() };
  let row: ObjectLiteral | undefined;
  if (input.idempotencyKey === null) {
    const v = new SqlValues(true);
    const { lock, command } = agentCommandSql(metadata, v, args);
    const results = await simpleQuery(dataSource, `${lock};\n${command}`);
    row = results[results.length - 1]?.rows[0];
  } else {
    const v = new SqlValues(false);
    const { lock, command } = agentCommandSql(metadata, v, args);
    const lockValues = v.values.slice(0, 1);
    row = await manager.transaction(async (m) => {
      await m.query(lock, lockValues);
      return ((await m.query(command, v.values)) as ObjectLiteral[])[0];
    });
  }
  if (!row) throw new Error('agent command statement returned no row');
  const outcome = row.__outcome as string;
  switch (outcome) {
    case 'ok':
      return row.id ? { outcome: 'created', operation: hydrate(manager, Operation, row) } : { outcome: 'key_taken' };
    case 'replay':
      return { outcome: 'replay', operation: hydrate(manager, Operation, row) };
    case 'destroy_pending':
    case 'same_pending':
      return { outcome, operationId: row.__conflict_id as string };
    case 'agent_not_found':
    case 'agent_destroyed':
    case 'no_running_instance':
    case 'no_stopped_instance':
      return { outcome };
    default:
      throw new Error(`unexpected agent command outcome ${outcome}`);
  }
}

function enumTypeName(dataSource: DataSource, target: { new (): ObjectLiteral }, property: string): string {
  const metadata = dataSource.getMetadata(target);
  const column = metadata.findColumnWithPropertyName(property);
  if (!column?.enumName) throw new Error(`${metadata.name}.${property} is not a named enum`);
  return metadata.schema ? `"${metadata.schema}"."${column.enumName}"` : `"${column.enumName}"`;
}

/**
 * Several statements in one round trip (PostgreSQL's simple query protocol runs them as one implicit
 * transaction). TypeORM's query() keeps only a single result, so this goes to the pool's client.
 */
async function simpleQuery(dataSource: DataSource, sql: string): Promise<Array<{ rows: ObjectLiteral[] }>> {
  if (!dataSource.isInitialized) throw new CannotExecuteNotConnectedError();
  const runner = dataSource.createQueryRunner('master');
  try {
    const client = (await runner.connect()) as { query(sql: string): Promise<{ rows: ObjectLiteral[] } | Array<{ rows: ObjectLiteral[] }>> };
    const result = await client.query(sql);
    return Array.isArray(result) ? result : [result];
  } finally {
    await runner.release();
  }
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
