import { In, type DataSource, type ObjectLiteral } from 'typeorm';
import { Agent, Event, Instance, Operation, ProvisioningJob, SYSTEM_ACTOR, TERMINAL_INSTANCE_STATUSES, type OperationStatus, type OperationType } from '../entities';
import { AGENT_COMMAND_TYPES, commandOf, type AgentCommandType } from '../operations/types';
import { IdempotencyKeyConflictError, RecordNotFoundError } from './errors';
import { type Db, hydrate, managerOf, type PatchOf, quotedTable, recordEvent } from './transitions';
import { isUuid } from './uuid';
import { pgPoolOf } from './data-source';

export interface NewOperation {
  type: OperationType;
  agentId?: string | null;
  provisioningJobId?: string | null;
  idempotencyKey?: string | null;
  /** Method and route template a client's key was sent to. */
  idempotencyRoute?: string | null;
  queueJobId?: string | null;
  /** Audit reason for the creation event; default "<type> requested" (with the policy's reason after a colon). */
  reason?: string;
  /** Why tailfleet asks for it itself (a policy: "pool refill"); written on the operation. */
  policyReason?: string | null;
  /** Chosen by the caller (so a job id derived from it can go into the same INSERT); default random. */
  id?: string;
  /** Who asked (token name); default `system`. */
  requestedBy?: string;
  /** The operation's args, already validated against its descriptor; default none. */
  args?: Record<string, unknown>;
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
    `INSERT INTO ${table} ("id", "type", "agent_id", "provisioning_job_id", "idempotency_key", "queue_job_id", "requested_by", "idempotency_route", "args", "reason")
     VALUES (COALESCE($6::uuid, gen_random_uuid()), $1, $2, $3, $4, $5, $7, $8, $9::jsonb, $10)
     ON CONFLICT ("idempotency_key") DO NOTHING
     RETURNING *`,
    [
      input.type,
      input.agentId ?? null,
      input.provisioningJobId ?? null,
      input.idempotencyKey ?? null,
      input.queueJobId ?? null,
      input.id ?? null,
      input.requestedBy ?? SYSTEM_ACTOR,
      input.idempotencyRoute ?? null,
      JSON.stringify(input.args ?? {}),
      input.policyReason ?? null,
    ],
  );
  if (rows.length === 1) {
    const operation = hydrate(manager, Operation, rows[0]!);
    await recordEvent(manager, {
      entityType: 'operation',
      entityId: operation.id,
      agentId: operation.agentId,
      fromStatus: null,
      toStatus: operation.status,
      reason: input.reason ?? `${input.type} requested${input.policyReason ? `: ${input.policyReason}` : ''}`,
      operationId: operation.id,
      actor: operation.requestedBy,
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

export type { AgentCommandType };

/** What a stop/start/destroy request found; only `created` wrote anything. */
export type AgentCommandOutcome =
  | { outcome: 'created'; operation: Operation }
  /** The idempotency key names an earlier operation (of any agent or type: the caller compares). */
  | { outcome: 'replay'; operation: Operation }
  | { outcome: 'agent_not_found' }
  | { outcome: 'agent_destroyed' }
  | { outcome: 'destroy_pending'; operationId: string }
  | { outcome: 'same_pending'; operationId: string }
  /** The live instance is in none of the statuses the command's descriptor accepts it from. */
  | { outcome: 'wrong_state' }
  /** A request on another agent took the idempotency key between the check and the insert. */
  | { outcome: 'key_taken' };

export interface AgentCommandInput {
  type: AgentCommandType;
  agentId: string;
  /** Chosen by the caller, so the queue job id can be derived from it and stored in the same INSERT. */
  operationId: string;
  queueJobId: string;
  idempotencyKey: string | null;
  /** Method and route template a client's key was sent to. */
  idempotencyRoute?: string | null;
  /** Who asked (the actor); default `system`. */
  requestedBy?: string;
  /** The operation's args, already validated against its descriptor; default none. */
  args?: Record<string, unknown>;
  /** Why tailfleet asks for it itself (a policy); written on the operation and its creation event. */
  reason?: string | null;
}

/** The names the lock and the command are prepared under on each connection. */
const LOCK_STATEMENT = 'tailfleet_agent_lock';
const AGENT_COMMAND_STATEMENT = 'tailfleet_agent_command';
// Only these characters are ever written into SQL text as a value; anything else is a parameter or refused.
const LITERAL_SAFE = /^[A-Za-z0-9 _.:-]*$/;

/** A value this code generated or validated (ids, fixed words) as SQL text; never client input. */
function literal(value: string | null): string {
  if (value === null) return 'NULL';
  if (value === NO_ARGS) return `'${NO_ARGS}'`;
  if (!LITERAL_SAFE.test(value)) throw new Error(`refusing to write ${JSON.stringify(value)} into SQL text`);
  return `'${value}'`;
}

// The args of a command that takes none, the one JSON text written into SQL as it is.
const NO_ARGS = '{}';

const literalList = (values: readonly string[]) => `(${values.map(literal).join(', ')})`;

interface AgentCommandStatements {
  /** Locks the agent row: `$1` the agent id. */
  lock: string;
  command: string;
}

const statements = new WeakMap<DataSource, AgentCommandStatements>();

/**
 * The command as one statement with nine parameters: $1 agent id, $2 command, $3 idempotency key,
 * $4 operation id, $5 queue job id, $6 requested by, $7 idempotency route, $8 args, $9 reason. Checked in the order a request is answered: unknown agent,
 * repeated key, destroyed agent, destroy under way, same command under way, instance in the wrong
 * state; only then are the operation and its creation event inserted.
 */
function agentCommandStatement(dataSource: DataSource): AgentCommandStatements {
  const cached = statements.get(dataSource);
  if (cached) return cached;
  const operations = quotedTable(dataSource.getMetadata(Operation));
  const events = quotedTable(dataSource.getMetadata(Event));
  const agents = quotedTable(dataSource.getMetadata(Agent));
  const instances = quotedTable(dataSource.getMetadata(Instance));
  const operationType = enumTypeName(dataSource, Operation, 'type');
  // Each command's precondition, from its descriptor: one accepted from any state skips the check
  // for a command of its type already under way; the others need the live instance in one of theirs.
  const anyState = AGENT_COMMAND_TYPES.filter((t) => commandOf(t).from === 'any');
  const preconditions = [
    ...anyState.map((t) => `WHEN $2::text = ${literal(t)} THEN 'ok'`),
    `WHEN EXISTS (SELECT 1 FROM pending WHERE type = $2::text) THEN 'same_pending'`,
    ...AGENT_COMMAND_TYPES.flatMap((t) => {
      const { from } = commandOf(t);
      return from === 'any' ? [] : [`WHEN $2::text = ${literal(t)} AND COALESCE((SELECT status FROM live) NOT IN ${literalList(from)}, true) THEN 'wrong_state'`];
    }),
  ].join('\n        ');
  // The answer is one json column (the outcome, a conflicting operation, the operation's row): the
  // driver describes and parses one field instead of twenty-odd, which is most of what the API spent
  // reading it.
  const command = `
    WITH agent AS (
      SELECT "status"::text AS status FROM ${agents} WHERE "id" = $1::uuid
    ), prior AS (
      SELECT * FROM ${operations} WHERE "idempotency_key" = $3::varchar
    ), pending AS (
      SELECT "id", "type"::text AS type, "requested_at" FROM ${operations}
      WHERE "agent_id" = $1::uuid AND "status" IN ${literalList(ACTIVE_OPERATION_STATUSES)}
        AND "type"::text IN ${literalList(AGENT_COMMAND_TYPES)}
    ), live AS (
      SELECT "status"::text AS status FROM ${instances}
      WHERE "agent_id" = $1::uuid AND NOT ("status"::text IN ${literalList(TERMINAL_INSTANCE_STATUSES)})
      ORDER BY "created_at" DESC, "id" DESC LIMIT 1
    ), verdict AS (
      SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM agent) THEN 'agent_not_found'
        WHEN EXISTS (SELECT 1 FROM prior) THEN 'replay'
        WHEN (SELECT status FROM agent) = 'destroyed' THEN 'agent_destroyed'
        WHEN EXISTS (SELECT 1 FROM pending WHERE type = 'destroy') THEN 'destroy_pending'
        ${preconditions}
        ELSE 'ok'
      END AS outcome
    ), inserted AS (
      INSERT INTO ${operations} ("id", "type", "agent_id", "idempotency_key", "queue_job_id", "requested_by", "idempotency_route", "args", "reason")
      SELECT $4::uuid, $2::text::${operationType}, $1::uuid, $3::varchar, $5::varchar, $6::varchar, $7::varchar, $8::jsonb, $9::text
      FROM verdict WHERE outcome = 'ok'
      ON CONFLICT ("idempotency_key") DO NOTHING
      RETURNING *
    ), logged AS (
      INSERT INTO ${events} ("entity_type", "entity_id", "agent_id", "from_status", "to_status", "reason", "operation_id", "actor")
      SELECT 'operation', "id", "agent_id", NULL, "status"::text, $2::text || ' requested' || COALESCE(': ' || "reason", ''), "id", "requested_by" FROM inserted
    )
    SELECT json_build_object(
      'outcome', verdict.outcome,
      'conflictId', (SELECT p."id" FROM pending p
        WHERE p.type = CASE WHEN verdict.outcome = 'destroy_pending' THEN 'destroy' ELSE $2::text END
        ORDER BY p."requested_at" DESC LIMIT 1),
      'operation', row_to_json(o)) AS "answer"
    FROM verdict LEFT JOIN (SELECT * FROM inserted UNION ALL SELECT * FROM prior) o ON true`;
  // No columns: the lock has nothing to say, and an empty row costs the driver least to read.
  const built = { lock: `SELECT FROM ${agents} WHERE "id" = $1::uuid FOR UPDATE`, command };
  statements.set(dataSource, built);
  return built;
}

/**
 * A stop, start or destroy request: checks whether the agent's state allows it and, if so, inserts
 * the queued operation (with its queue job id, so nobody ever sees it without one) and its creation
 * event. The agent row is locked first, in its own statement, so the checks read a snapshot taken
 * after every command that held the lock before has committed: two requests cannot both pass them.
 * (With the lock in the same statement they could: a statement's snapshot predates its lock wait.)
 *
 * Without an idempotency key every value is an id or a fixed word, and lock and command go as one
 * simple query: one round trip, run by PostgreSQL as one implicit transaction, both statements
 * prepared once per connection. A key is client text, so keyed requests bind it as a parameter in
 * an ordinary transaction.
 */
export async function requestAgentCommand(dataSource: DataSource, input: AgentCommandInput): Promise<AgentCommandOutcome> {
  if (!isUuid(input.agentId)) return { outcome: 'agent_not_found' };
  const built = agentCommandStatement(dataSource);
  const agentId = input.agentId.toLowerCase();
  const requestedBy = input.requestedBy ?? SYSTEM_ACTOR;
  const args = JSON.stringify(input.args ?? {});
  const reason = input.reason ?? null;
  const values = [agentId, input.type, input.idempotencyKey, input.operationId, input.queueJobId, requestedBy, input.idempotencyRoute ?? null, args, reason];
  const manager = dataSource.manager;
  const row =
    input.idempotencyKey === null && LITERAL_SAFE.test(requestedBy) && args === NO_ARGS && reason === null
      ? await lockAndExecute(dataSource, built, values as Array<string | null>)
      : await manager.transaction(async (m) => {
          await m.query(built.lock, [agentId]);
          return ((await m.query(built.command, values)) as ObjectLiteral[])[0];
        });
  if (!row) throw new Error('agent command statement returned no row');
  const answer = row.answer as { outcome: string; conflictId: string | null; operation: ObjectLiteral | null };
  const { outcome } = answer;
  switch (outcome) {
    case 'ok':
      return answer.operation ? { outcome: 'created', operation: hydrate(manager, Operation, answer.operation) } : { outcome: 'key_taken' };
    case 'replay':
      return { outcome: 'replay', operation: hydrate(manager, Operation, answer.operation!) };
    case 'destroy_pending':
    case 'same_pending':
      return { outcome, operationId: answer.conflictId! };
    case 'agent_not_found':
    case 'agent_destroyed':
    case 'wrong_state':
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

interface PgClient {
  query(sql: string): Promise<{ rows: ObjectLiteral[] } | Array<{ rows: ObjectLiteral[] }>>;
}

/** Connections on which both statements are known to be prepared. */
const prepared = new WeakSet<PgClient>();

/**
 * `EXECUTE <lock>(…); EXECUTE <command>(…)` as one simple query. TypeORM's query() keeps a single
 * result, so this talks to the pool's client.
 */
async function lockAndExecute(dataSource: DataSource, built: AgentCommandStatements, values: Array<string | null>): Promise<ObjectLiteral | undefined> {
  const client = await pgPoolOf(dataSource).connect();
  let failed: Error | undefined;
  try {
    return await executeOn(client, built, values);
  } catch (err) {
    // A connection that broke mid-query is not handed out again.
    if (!(err as { code?: string }).code) failed = err as Error;
    throw err;
  } finally {
    client.release(failed);
  }
}

async function executeOn(client: PgClient, built: AgentCommandStatements, values: Array<string | null>): Promise<ObjectLiteral | undefined> {
  const execute = `EXECUTE ${LOCK_STATEMENT}(${literal(values[0]!)});\nEXECUTE ${AGENT_COMMAND_STATEMENT}(${values.map(literal).join(', ')})`;
  for (let retried = false; ; retried = true) {
    if (!prepared.has(client)) await prepareOn(client, built);
    try {
      const result = await client.query(execute);
      const results = Array.isArray(result) ? result : [result];
      return results[results.length - 1]?.rows[0];
    } catch (err) {
      // The session lost its statements (a DISCARD ALL, say): raised before anything is written.
      if (retried || (err as { code?: string }).code !== '26000') throw err;
      prepared.delete(client);
    }
  }
}

/** Prepares whichever of the two statements the connection's session does not hold yet. */
async function prepareOn(client: PgClient, built: AgentCommandStatements): Promise<void> {
  const held = (await client.query(
    `SELECT name FROM pg_prepared_statements WHERE name IN ('${LOCK_STATEMENT}', '${AGENT_COMMAND_STATEMENT}')`,
  )) as { rows: Array<{ name: string }> };
  const names = new Set(held.rows.map((r) => r.name));
  const missing = [
    ...(names.has(LOCK_STATEMENT) ? [] : [`PREPARE ${LOCK_STATEMENT} AS ${built.lock}`]),
    ...(names.has(AGENT_COMMAND_STATEMENT) ? [] : [`PREPARE ${AGENT_COMMAND_STATEMENT} AS ${built.command}`]),
  ];
  if (missing.length > 0) await client.query(missing.join(';\n'));
  prepared.add(client);
}

/**
 * Opens `connections` pool connections and runs the command once on each, for an agent that does
 * not exist (nothing is written). A fresh connection is a cold PostgreSQL backend — empty catalog
 * caches, the statement not yet parsed or planned — and costs its first requests tens of
 * milliseconds; warmed at start-up, the first burst of requests does not pay for it.
 */
export async function warmAgentCommands(dataSource: DataSource, connections: number): Promise<void> {
  const built = agentCommandStatement(dataSource);
  const nobody = '00000000-0000-4000-8000-000000000000';
  const values = [nobody, 'stop', null, nobody, 'op-warm-up', SYSTEM_ACTOR, null, NO_ARGS, null];
  // Never more than the pool holds: runners waiting for each other would wait for ever.
  const poolSize = (dataSource.options as { poolSize?: number }).poolSize ?? 10;
  const runners = Array.from({ length: Math.min(connections, poolSize) }, () => dataSource.createQueryRunner('master'));
  try {
    // Held all at once, so the pool opens that many distinct connections.
    const clients = (await Promise.all(runners.map((r) => r.connect()))) as PgClient[];
    await Promise.all(clients.map((client) => executeOn(client, built, values)));
  } finally {
    await Promise.all(runners.map((r) => r.release()));
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

  /**
   * Frees a key slot whose operation was requested at least `ttlMs` ago, so a request that reuses
   * the key is a new request. The old operation keeps its route and everything else. Returns
   * whether a slot was freed.
   */
  async releaseExpiredKey(key: string, ttlMs: number, db: Db = this.dataSource): Promise<boolean> {
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Operation));
    const [, affected] = (await manager.query(
      `UPDATE ${table} SET "idempotency_key" = NULL
        WHERE "idempotency_key" = $1 AND "requested_at" <= now() - make_interval(secs => $2::float8 / 1000)`,
      [key, ttlMs],
    )) as [unknown, number];
    return affected > 0;
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
   * Accepted work the relay may have to deliver again: queued or running operations requested at
   * least `olderThanMs` ago, oldest first, each with the instance a provision works on (its job needs
   * it). Served by the partial index on pending operations, so it stays small however long the history.
   */
  async findPending(
    options: { olderThanMs: number; limit: number },
    db: Db = this.dataSource,
  ): Promise<Array<{ operation: Operation; instanceId: string | null }>> {
    const manager = managerOf(db);
    const operations = quotedTable(manager.connection.getMetadata(Operation));
    const jobs = quotedTable(manager.connection.getMetadata(ProvisioningJob));
    const rows: ObjectLiteral[] = await manager.query(
      `SELECT o.*, pj."instance_id" AS "__instance_id"
         FROM ${operations} o
         LEFT JOIN ${jobs} pj ON pj."id" = o."provisioning_job_id"
        WHERE o."status" IN ('queued', 'running')
          AND o."requested_at" < now() - make_interval(secs => $1::float8 / 1000)
        ORDER BY o."requested_at"
        LIMIT $2`,
      [options.olderThanMs, options.limit],
    );
    return rows.map((raw) => ({ operation: hydrate(manager, Operation, raw), instanceId: (raw.__instance_id as string | null) ?? null }));
  }

  /** Every operation queued or running. */
  listActive(db: Db = this.dataSource): Promise<Operation[]> {
    return managerOf(db).find(Operation, { where: { status: In([...ACTIVE_OPERATION_STATUSES]) } });
  }

  /** The agent's newest operation of this type, in any status. */
  async latestOfAgent(agentId: string, type: OperationType, db: Db = this.dataSource): Promise<Operation | null> {
    if (!isUuid(agentId)) return null;
    return managerOf(db).findOne(Operation, { where: { agentId, type }, order: { requestedAt: 'DESC' } });
  }

  /** The provision operation of a provisioning job (newest first, should there be several). */
  findProvisionOf(provisioningJobId: string, db: Db = this.dataSource): Promise<Operation | null> {
    if (!isUuid(provisioningJobId)) return Promise.resolve(null);
    return managerOf(db).findOne(Operation, {
      where: { provisioningJobId, type: 'provision' },
      order: { requestedAt: 'DESC' },
    });
  }

  /** The newest operation of a type still queued (or any status when `statuses` is given). */
  findLatestOfType(type: OperationType, statuses: readonly OperationStatus[], db: Db = this.dataSource): Promise<Operation | null> {
    return managerOf(db)
      .createQueryBuilder(Operation, 'o')
      .where('o.type = :type', { type })
      .andWhere('o.status IN (:...statuses)', { statuses })
      .orderBy('o.requestedAt', 'DESC')
      .getOne();
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

  /**
   * A redelivery takes over the claim of an operation still running under an earlier delivery (its
   * worker stalled). Guarded by the status, so an operation that ended meanwhile is not touched.
   */
  async takeOverClaim(id: string, attempt: number, claimToken: string | null, db: Db = this.dataSource): Promise<boolean> {
    const result = await managerOf(db).update(Operation, { id, status: 'running' }, { attempts: attempt, failedStep: null, claimToken });
    return (result.affected ?? 0) > 0;
  }
}
