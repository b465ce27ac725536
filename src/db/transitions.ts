import { DataSource, type EntityManager, type EntityMetadata, type ObjectLiteral } from 'typeorm';
import type { ColumnMetadata } from 'typeorm/metadata/ColumnMetadata';
import {
  AGENT_STATUSES,
  Agent,
  type AgentStatus,
  Event,
  type EventEntityType,
  INSTANCE_STATUSES,
  Instance,
  type InstanceStatus,
  TERMINAL_INSTANCE_STATUSES,
  Operation,
  type OperationStatus,
  ProvisioningJob,
  type ProvisioningJobStatus,
} from '../entities';
import { descriptorOf, OPERATION_TYPE_NAMES, type Moves } from '../operations/types';
import { IllegalTransitionError, RecordNotFoundError, TransitionConflictError } from './errors';
import { isUuid } from './uuid';

/** Anything that can run a query: the DataSource (autocommit) or a transaction's EntityManager. */
export type Db = DataSource | EntityManager;

export interface StatusOf {
  agent: AgentStatus;
  instance: InstanceStatus;
  provisioning_job: ProvisioningJobStatus;
  operation: OperationStatus;
}

export interface RowOf {
  agent: Agent;
  instance: Instance;
  provisioning_job: ProvisioningJob;
  operation: Operation;
}

/** The statuses each status may move to. */
type Rows<S extends string> = { readonly [F in S]: readonly S[] };
type Table<K extends EventEntityType> = Rows<StatusOf[K]>;

/**
 * Every status change the system may make, and nothing else. Derived from SPEC "Domain and states"
 * and "Operations"; a move missing here is refused as a programming error before any SQL runs.
 *
 * instance and agent: the union of the moves each operation type declares (src/operations/types/),
 * where each one says why. What holds across them: every live instance may be destroyed, and a destroy
 * that cannot confirm the server and the device are gone keeps retrying in `destroying` (no way back,
 * no destroying → failed that would hide a billed server); destroyed and failed are terminal (a new
 * provision makes a new instance row: the partial unique index allows one live instance per agent).
 *
 * provisioning_job
 * - queued → running → succeeded | failed; failed → running when an operator retries it in Bull Board.
 * - queued/running/failed → rolled_back: the rollback is triggered by the queue's final failure, which
 *   may reach us before (or without) the worker recording `failed`.
 *
 * operation
 * - queued → running → succeeded | failed; queued → cancelled (never started); queued → failed
 *   (rejected before it ran, e.g. the agent is gone).
 * - running → queued while BullMQ waits to retry a failed attempt; failed → queued | running when an
 *   operator retries the job.
 *
 * No status moves to itself: re-running a step whose target is already reached is `allowSame`.
 */
export const TRANSITIONS: { readonly [K in EventEntityType]: Table<K> } = {
  // Instance and agent moves are the union of what each operation type declares it does.
  instance: movesOf('instance', INSTANCE_STATUSES, TERMINAL_INSTANCE_STATUSES),
  agent: movesOf('agent', AGENT_STATUSES, ['destroyed']),
  provisioning_job: endingIn(['succeeded', 'rolled_back'], {
    queued: ['running', 'failed', 'rolled_back'],
    running: ['succeeded', 'failed', 'rolled_back'],
    failed: ['running', 'rolled_back'],
  }),
  operation: endingIn(['succeeded', 'cancelled'], {
    queued: ['running', 'failed', 'cancelled'],
    running: ['succeeded', 'failed', 'queued'],
    failed: ['queued', 'running'],
  }),
};

/**
 * A table written out: its terminal statuses, which no move leaves, and the moves out of every other
 * status (each to a status of the table).
 */
function endingIn<T extends string, F extends string>(terminal: readonly T[], moves: { readonly [S in F]: readonly NoInfer<F | T>[] }): Rows<F | T> {
  return { ...moves, ...Object.fromEntries(terminal.map((s) => [s, []])) } as Rows<F | T>;
}

/** The table of one entity from the operation descriptors' moves (`*`: every non-terminal status). */
function movesOf<K extends 'instance' | 'agent'>(entity: K, statuses: readonly StatusOf[K][], terminal: readonly StatusOf[K][]): Table<K> {
  const table = Object.fromEntries(statuses.map((s) => [s, [] as StatusOf[K][]])) as Record<StatusOf[K], StatusOf[K][]>;
  for (const type of OPERATION_TYPE_NAMES) {
    const moves = descriptorOf(type)[entity] as Moves<StatusOf[K]>;
    for (const [from, tos] of Object.entries(moves) as Array<[StatusOf[K] | '*', readonly StatusOf[K][]]>) {
      for (const to of tos) {
        const froms = from === '*' ? statuses.filter((s) => !terminal.includes(s) && s !== to) : [from];
        for (const f of froms) if (!table[f].includes(to)) table[f].push(to);
      }
    }
  }
  return table;
}

export function canTransition<K extends EventEntityType>(entity: K, from: StatusOf[K], to: StatusOf[K]): boolean {
  const table = TRANSITIONS[entity] as Table<K>;
  return (table[from] ?? []).includes(to);
}

/** Columns a transition may set together with the status (timestamps, ids learnt on the way, error). */
export interface PatchMap {
  agent: Record<never, never>;
  instance: Partial<
    Pick<
      Instance,
      | 'serverId'
      | 'serverName'
      | 'serverIp'
      | 'tailscaleDeviceId'
      | 'tailscaleIp'
      | 'tailscaleHostname'
      | 'snapshotImageId'
      | 'snapshotSizeGb'
      | 'error'
      | 'startedAt'
      | 'stoppedAt'
      | 'destroyedAt'
    >
  >;
  provisioning_job: Partial<Pick<ProvisioningJob, 'attempts' | 'error' | 'failedStep' | 'startedAt' | 'finishedAt'>>;
  operation: Partial<
    Pick<
      Operation,
      | 'attempts'
      | 'progress'
      | 'currentStep'
      | 'error'
      | 'failedStep'
      | 'queueJobId'
      | 'claimToken'
      | 'startedAt'
      | 'finishedAt'
    >
  >;
}
export type PatchOf<K extends EventEntityType> = PatchMap[K];

const PATCHABLE: { [K in EventEntityType]: readonly (keyof PatchMap[K])[] } = {
  agent: [],
  instance: [
    'serverId',
    'serverName',
    'serverIp',
    'tailscaleDeviceId',
    'tailscaleIp',
    'tailscaleHostname',
    'snapshotImageId',
    'snapshotSizeGb',
    'error',
    'startedAt',
    'stoppedAt',
    'destroyedAt',
  ],
  provisioning_job: ['attempts', 'error', 'failedStep', 'startedAt', 'finishedAt'],
  operation: ['attempts', 'progress', 'currentStep', 'error', 'failedStep', 'queueJobId', 'claimToken', 'startedAt', 'finishedAt'],
};

export interface TransitionRequest<K extends EventEntityType = EventEntityType> {
  entity: K;
  id: string;
  /** Statuses the row must be in; each from → to must be in TRANSITIONS. */
  from: readonly StatusOf[K][];
  to: StatusOf[K];
  /** Why, for the audit trail (e.g. "stop requested", "shutdown failed: …"). */
  reason: string;
  operationId?: string | null;
  patch?: PatchOf<K>;
  /**
   * Columns set only where they are still null (e.g. the first start time of an operation that is
   * claimed again), so the caller need not read the row first to keep an existing value.
   */
  patchIfNull?: PatchOf<K>;
  /**
   * When the row is already in `to`, return it unchanged (changed: false, no event, patch not applied)
   * instead of throwing. For steps re-run after a crash or a BullMQ redelivery.
   */
  allowSame?: boolean;
  /**
   * Further columns the row must hold for the move to happen (compared with IS NOT DISTINCT FROM),
   * e.g. the claim token of the delivery that owns an operation. A row that fails them is a conflict.
   */
  guard?: PatchOf<K> & Partial<Record<'type' | 'agentId' | 'provisioningJobId', unknown>>;
  /** Who caused the move, for the event (default `system`). */
  actor?: string;
}

export interface TransitionResult<K extends EventEntityType = EventEntityType> {
  row: RowOf[K];
  /** false only when allowSame found the row already in `to`. */
  changed: boolean;
  /** The status the row was in; equals `to` when nothing changed. */
  from: StatusOf[K];
}

const TARGETS: { [K in EventEntityType]: { new (): RowOf[K] } } = {
  agent: Agent,
  instance: Instance,
  provisioning_job: ProvisioningJob,
  operation: Operation,
};

// The column that names the agent an entity belongs to, copied onto its events.
const AGENT_COLUMN: { [K in EventEntityType]: string } = {
  agent: 'id',
  instance: 'agent_id',
  provisioning_job: 'agent_id',
  operation: 'agent_id',
};

export function managerOf(db: Db): EntityManager {
  return db instanceof DataSource ? db.manager : db;
}

/** Runs fn in the caller's transaction when there is one, else in a new one. */
export async function inTransaction<T>(db: Db, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
  const manager = managerOf(db);
  if (manager.queryRunner?.isTransactionActive) return fn(manager);
  return manager.transaction(fn);
}

export function quotedTable(metadata: EntityMetadata): string {
  return metadata.schema ? `"${metadata.schema}"."${metadata.tableName}"` : `"${metadata.tableName}"`;
}

export function columnName(metadata: EntityMetadata, property: string): string {
  const column = metadata.findColumnWithPropertyName(property);
  if (!column) throw new Error(`${metadata.name} has no column ${property}`);
  return column.databaseName;
}

/**
 * TypeORM answers a bare UPDATE … RETURNING with [rows, count] but a SELECT with rows; wrapping the
 * statement in a CTE always yields plain rows.
 */
export function returningRows(updateSql: string): string {
  return `WITH changed AS (${updateSql}) SELECT * FROM changed`;
}

/** How one column's raw value becomes its property's: as it comes, as a Date, or through the driver. */
interface ColumnReader {
  name: string;
  property: string;
  read: 'as-is' | 'date' | ColumnMetadata;
}

// Column types the driver hands back unchanged (no transformer): most columns, read on every request.
const AS_IS_TYPES = new Set<unknown>(['uuid', 'varchar', 'character varying', 'text', 'integer', 'int', 'int4', 'smallint', 'bigint', 'json', 'jsonb']);
const DATE_TYPES = new Set<unknown>(['timestamp', 'timestamptz', 'timestamp with time zone', 'timestamp without time zone', 'datetime', Date]);

function readerOf(column: ColumnMetadata): ColumnReader['read'] {
  if (column.transformer || column.isArray) return column;
  if (AS_IS_TYPES.has(column.type)) return 'as-is';
  // An enum of strings only: the driver turns numeric-looking values into numbers only when the enum has numbers.
  if ((column.type === 'enum' || column.type === 'simple-enum') && column.enum?.every((v) => typeof v === 'string')) return 'as-is';
  if (DATE_TYPES.has(column.type)) return 'date';
  return column;
}

const readers = new WeakMap<EntityMetadata, ColumnReader[]>();

/**
 * Turns a raw `RETURNING *` / `SELECT *` row (or its `row_to_json`) into an entity instance (entities
 * here have no embeddeds). What each column needs is worked out once per entity: the same values
 * the driver's prepareHydratedValue gives, without asking it column by column.
 */
export function hydrate<T extends ObjectLiteral>(manager: EntityManager, target: { new (): T }, raw: ObjectLiteral): T {
  const metadata = manager.connection.getMetadata(target);
  let columns = readers.get(metadata);
  if (!columns) {
    columns = metadata.columns.map((column) => ({ name: column.databaseName, property: column.propertyName, read: readerOf(column) }));
    readers.set(metadata, columns);
  }
  const { driver } = manager.connection;
  const entity = metadata.create() as Record<string, unknown>;
  for (const { name, property, read } of columns) {
    if (!(name in raw)) continue;
    const value: unknown = raw[name];
    if (read === 'as-is') entity[property] = value;
    // DateUtils.normalizeHydratedDate: a string (row_to_json) becomes a Date, a Date stays.
    else if (read === 'date') entity[property] = typeof value === 'string' && value !== '' ? new Date(value) : value;
    else entity[property] = driver.prepareHydratedValue(value, read);
  }
  return entity as T;
}

/** INSERT … RETURNING * for one row, hydrated (database defaults included). */
export async function insertReturning<T extends ObjectLiteral>(
  db: Db,
  target: { new (): T },
  values: Partial<T>,
): Promise<T> {
  const manager = managerOf(db);
  const result = await manager
    .createQueryBuilder()
    .insert()
    .into(target)
    .values(values as never)
    .returning('*')
    .execute();
  return hydrate(manager, target, (result.raw as ObjectLiteral[])[0]!);
}

function validate<K extends EventEntityType>(req: TransitionRequest<K>): void {
  const table = TRANSITIONS[req.entity] as Table<K> | undefined;
  if (!table) throw new IllegalTransitionError(req.entity, req.from, req.to, 'unknown entity');
  if (!(req.to in table)) throw new IllegalTransitionError(req.entity, req.from, req.to, `unknown status ${req.to}`);
  if (req.from.length === 0) throw new IllegalTransitionError(req.entity, req.from, req.to, 'empty from list');
  for (const from of req.from) {
    if (from === req.to) {
      throw new IllegalTransitionError(req.entity, req.from, req.to, 'a status cannot move to itself; use allowSame');
    }
    if (!canTransition(req.entity, from, req.to)) {
      throw new IllegalTransitionError(req.entity, req.from, req.to, `${from} → ${req.to} is not allowed`);
    }
  }
  const allowed = PATCHABLE[req.entity] as readonly string[];
  for (const key of [...Object.keys(req.patch ?? {}), ...Object.keys(req.patchIfNull ?? {})]) {
    if (!allowed.includes(key)) {
      throw new IllegalTransitionError(req.entity, req.from, req.to, `column ${key} cannot be set by a transition`);
    }
  }
  if (!req.reason?.trim()) throw new IllegalTransitionError(req.entity, req.from, req.to, 'a reason is required');
}

/**
 * Moves one row from one of `from` to `to` with a guarded update and writes its event row, both in a
 * single statement (so in the caller's transaction when `db` is a transaction's manager, atomically
 * otherwise). Exactly one row changes or it throws:
 * - TransitionConflictError: the row is in another status (re-read after the update matched nothing);
 * - RecordNotFoundError: no such row;
 * - IllegalTransitionError: the move is not in TRANSITIONS (checked before touching the database).
 */
export async function transition<K extends EventEntityType>(
  db: Db,
  req: TransitionRequest<K>,
): Promise<TransitionResult<K>> {
  validate(req);
  if (!isUuid(req.id)) throw new RecordNotFoundError(req.entity, req.id);
  const manager = managerOf(db);
  const moved = await moveWhere(manager, req, 'id', req.id);
  if (moved) return moved;

  const target = TARGETS[req.entity] as { new (): RowOf[K] };
  const table = quotedTable(manager.connection.getMetadata(target));
  const current: ObjectLiteral[] = await manager.query(`SELECT * FROM ${table} WHERE "id" = $1`, [req.id]);
  if (current.length === 0) throw new RecordNotFoundError(req.entity, req.id);
  const row = hydrate(manager, target, current[0]!);
  const actual = (row as unknown as { status: StatusOf[K] }).status;
  if (req.allowSame && actual === req.to) return { row, changed: false, from: actual };
  throw new TransitionConflictError(req.entity, req.id, req.from, actual, req.to);
}

/**
 * transition() for the one row of `owner` in one of `from` — the agent's live instance, of which the
 * schema allows one (a partial unique index), so `from` must hold live statuses only — without
 * reading the row first to learn its id. Null when no such row is in `from`: nothing changed, and
 * the caller reads what there is. allowSame does not apply (there is no row to answer with).
 */
export async function transitionOf<K extends 'instance'>(
  db: Db,
  owner: { agentId: string },
  req: Omit<TransitionRequest<K>, 'id' | 'allowSame'>,
): Promise<TransitionResult<K> | null> {
  const full = { ...req, id: owner.agentId } as TransitionRequest<K>;
  validate(full);
  if (!isUuid(owner.agentId)) return null;
  return moveWhere(managerOf(db), full, 'agentId', owner.agentId);
}

/**
 * The guarded move itself: one statement that locks the row named by `key` only if it is still in an
 * allowed status (PostgreSQL re-checks the condition on the newest version after waiting for a
 * concurrent writer), updates it, and writes its event, remembering the status it left. Null when
 * no row matched.
 */
async function moveWhere<K extends EventEntityType>(
  manager: EntityManager,
  req: TransitionRequest<K>,
  key: 'id' | 'agentId',
  value: string,
): Promise<TransitionResult<K> | null> {
  const target = TARGETS[req.entity] as { new (): RowOf[K] };
  const metadata = manager.connection.getMetadata(target);
  const events = manager.connection.getMetadata(Event);
  const table = quotedTable(metadata);

  const params: unknown[] = [value, [...req.from], req.to, req.reason, req.operationId ?? null];
  const sets = [`"status" = $3`, `"updated_at" = now()`];
  for (const [column, v] of Object.entries(req.patch ?? {})) {
    // As in TypeORM's update(): undefined means "leave as is"; null clears the column.
    if (v === undefined) continue;
    params.push(v);
    sets.push(`"${columnName(metadata, column)}" = $${params.length}`);
  }
  for (const [column, v] of Object.entries(req.patchIfNull ?? {})) {
    if (v === undefined || v === null || (req.patch as Record<string, unknown> | undefined)?.[column] !== undefined) continue;
    params.push(v);
    const name = columnName(metadata, column);
    sets.push(`"${name}" = COALESCE(t."${name}", $${params.length})`);
  }
  const entityTypeParam = params.push(req.entity);
  const actorParam = params.push(req.actor ?? 'system');
  const guards: string[] = [];
  for (const [column, v] of Object.entries(req.guard ?? {})) {
    if (v === undefined) continue;
    params.push(v);
    guards.push(` AND "${columnName(metadata, column)}" IS NOT DISTINCT FROM $${params.length}`);
  }

  const sql = `
    WITH prev AS (
      SELECT "id", "status" FROM ${table}
      WHERE "${columnName(metadata, key)}" = $1 AND "status"::text = ANY($2::text[])${guards.join('')}
      LIMIT 1
      FOR UPDATE
    ), moved AS (
      UPDATE ${table} AS t SET ${sets.join(', ')}
      FROM prev WHERE t."id" = prev."id"
      RETURNING t.*, prev."status"::text AS "__from_status"
    ), logged AS (
      INSERT INTO ${quotedTable(events)}
        ("entity_type", "entity_id", "agent_id", "from_status", "to_status", "reason", "operation_id", "actor")
      SELECT $${entityTypeParam}, moved."id", moved."${AGENT_COLUMN[req.entity]}", moved."__from_status", $3, $4, $5, $${actorParam}
      FROM moved
    )
    SELECT * FROM moved`;
  const rows: ObjectLiteral[] = await manager.query(sql, params);
  if (rows.length !== 1) return null;
  const raw = rows[0]!;
  return { row: hydrate(manager, target, raw), changed: true, from: raw.__from_status as StatusOf[K] };
}

type ResultsOf<T extends readonly TransitionRequest<any>[]> = {
  -readonly [I in keyof T]: T[I] extends TransitionRequest<infer K> ? TransitionResult<K> : never;
};

/** A move another writer may have made first: the moved row, or null when the row is gone or moved already. */
export async function tryTransition<K extends EventEntityType>(db: Db, req: TransitionRequest<K>): Promise<RowOf[K] | null> {
  try {
    return (await transition(db, req)).row;
  } catch (err) {
    if (err instanceof TransitionConflictError || err instanceof RecordNotFoundError) return null;
    throw err;
  }
}

/**
 * Several transitions that must happen together (instance + agent, job + operation …), in order,
 * all or nothing. Inside a caller's transaction it uses a savepoint, so a conflict on the second
 * move also undoes the first while leaving the caller's transaction usable.
 */
export async function transitionGroup<const T extends readonly TransitionRequest<any>[]>(
  db: Db,
  requests: T,
): Promise<ResultsOf<T>> {
  for (const req of requests) validate(req);
  return managerOf(db).transaction(async (manager) => {
    const results: TransitionResult[] = [];
    for (const req of requests) results.push(await transition(manager, req));
    return results as ResultsOf<T>;
  });
}

export interface MoveOutcome<K extends EventEntityType = EventEntityType> {
  /** false only when allowSame found the row already in `to`. */
  changed: boolean;
  /** The status the row was in. */
  from: StatusOf[K];
}

type OutcomesOf<T extends readonly TransitionRequest<any>[]> = {
  -readonly [I in keyof T]: T[I] extends TransitionRequest<infer K> ? MoveOutcome<K> : never;
};

/**
 * transitionGroup for moves of different rows, as one statement: one round trip instead of a
 * transaction of its own (BEGIN, a statement per move, COMMIT). Every row is locked and its guard
 * checked, in request order, before anything is written, so the moves happen all together or not at
 * all. The rows themselves are not returned. When a guard refuses, the rows are read once more and
 * the same error transitionGroup would give is thrown, for the first request in order that cannot
 * move: RecordNotFoundError or TransitionConflictError.
 */
export async function transitionTogether<const T extends readonly TransitionRequest<any>[]>(
  db: Db,
  requests: T,
  /** Event rows that are no moves (an audit event of the work), written only when the moves happen. */
  events: readonly NewEvent[] = [],
): Promise<OutcomesOf<T>> {
  const moves = requests as readonly TransitionRequest[];
  for (const req of moves) validate(req);
  if (moves.some((r) => r.guard)) throw new Error('transitionTogether does not take guards; use transition or transitionGroup');
  const keys = new Set(moves.map((r) => `${r.entity}:${r.id}`));
  if (keys.size !== moves.length) throw new Error('transitionTogether moves each row once; use transitionGroup for a row moved twice');
  for (const req of moves) if (!isUuid(req.id)) throw new RecordNotFoundError(req.entity, req.id);
  if (moves.length === 0) {
    if (events.length > 0) await inTransaction(db, async (m) => {
      for (const event of events) await recordEvent(m, event);
    });
    return [] as unknown as OutcomesOf<T>;
  }

  const manager = managerOf(db);
  const eventTable = quotedTable(manager.connection.getMetadata(Event));
  const params: unknown[] = [];
  const p = (value: unknown) => `$${params.push(value)}`;
  const last = moves.length - 1;
  // Guards first: a WITH item can only name the items before it, and every write needs the last guard.
  const guards: string[] = [];
  const writes: string[] = [];
  const outcomes: string[] = [];
  moves.forEach((req, i) => {
    const metadata = manager.connection.getMetadata(TARGETS[req.entity]);
    const table = quotedTable(metadata);
    const accepted = req.allowSame ? [...req.from, req.to] : [...req.from];
    // Joined to the previous move's row: locks are taken in request order, and only while every
    // earlier guard has held.
    guards.push(`p${i} AS (
      SELECT t."id", t."status"::text AS status FROM ${table} t${i > 0 ? `, p${i - 1}` : ''}
      WHERE t."id" = ${p(req.id)}::uuid AND t."status"::text = ANY(${p(accepted)}::text[])
      FOR UPDATE OF t
    )`);
    const to = p(req.to);
    const sets = [`"status" = ${to}`, `"updated_at" = now()`];
    for (const [key, value] of Object.entries(req.patch ?? {})) {
      if (value === undefined) continue;
      sets.push(`"${columnName(metadata, key)}" = ${p(value)}`);
    }
    for (const [key, value] of Object.entries(req.patchIfNull ?? {})) {
      if (value === undefined || value === null || (req.patch as Record<string, unknown> | undefined)?.[key] !== undefined) continue;
      const column = columnName(metadata, key);
      sets.push(`"${column}" = COALESCE(t."${column}", ${p(value)})`);
    }
    writes.push(`m${i} AS (
      UPDATE ${table} AS t SET ${sets.join(', ')}
      FROM p${i} WHERE t."id" = p${i}."id" AND p${i}.status <> ${p(req.to)}::text AND EXISTS (SELECT 1 FROM p${last})
      RETURNING t."id", t."${AGENT_COLUMN[req.entity]}" AS agent_id, p${i}.status AS from_status
    )`);
    writes.push(`e${i} AS (
      INSERT INTO ${eventTable} ("entity_type", "entity_id", "agent_id", "from_status", "to_status", "reason", "operation_id", "actor")
      SELECT ${p(req.entity)}, m."id", m.agent_id, m.from_status, ${p(req.to)}, ${p(req.reason)}, ${p(req.operationId ?? null)}::uuid, ${p(req.actor ?? 'system')}::varchar
      FROM m${i} m
    )`);
    outcomes.push(`SELECT ${i} AS i, p${i}.status AS from_status, EXISTS (SELECT 1 FROM m${i}) AS changed FROM p${i}`);
  });
  events.forEach((event, j) => {
    writes.push(`a${j} AS (
      INSERT INTO ${eventTable} ("entity_type", "entity_id", "agent_id", "from_status", "to_status", "reason", "operation_id", "actor")
      SELECT ${p(event.entityType)}, ${p(event.entityId)}::uuid, ${p(event.agentId)}::uuid, ${p(event.fromStatus)}::varchar, ${p(event.toStatus)}::varchar, ${p(event.reason)}::varchar, ${p(event.operationId ?? null)}::uuid, ${p(event.actor ?? 'system')}::varchar
      WHERE EXISTS (SELECT 1 FROM p${last})
    )`);
  });
  const sql = `WITH ${[...guards, ...writes].join(',\n')}
    SELECT * FROM (${outcomes.join(' UNION ALL ')}) o WHERE EXISTS (SELECT 1 FROM p${last}) ORDER BY i`;
  const rows: Array<{ i: number; from_status: string; changed: boolean }> = await manager.query(sql, params);
  if (rows.length === moves.length) {
    return rows.map((r) => ({ changed: r.changed, from: r.from_status })) as unknown as OutcomesOf<T>;
  }

  // Nothing was written. Name the first move that cannot happen, as a move-by-move group would.
  for (const req of moves) {
    const table = quotedTable(manager.connection.getMetadata(TARGETS[req.entity]));
    const current: Array<{ status: string }> = await manager.query(`SELECT "status"::text AS status FROM ${table} WHERE "id" = $1`, [req.id]);
    if (current.length === 0) throw new RecordNotFoundError(req.entity, req.id);
    const actual = current[0]!.status;
    const accepted: readonly string[] = req.allowSame ? [...req.from, req.to] : req.from;
    if (!accepted.includes(actual)) throw new TransitionConflictError(req.entity, req.id, req.from, actual, req.to);
  }
  // Every row is back in an accepted status (it changed twice meanwhile): report it like any lost race.
  const first = moves[0]!;
  throw new TransitionConflictError(first.entity, first.id, first.from, 'changed concurrently', first.to);
}

export interface NewEvent {
  entityType: EventEntityType;
  entityId: string;
  agentId: string | null;
  fromStatus: string | null;
  toStatus: string;
  reason: string;
  operationId?: string | null;
  /** Who caused it (default `system`). */
  actor?: string;
}

/** Event for a row created directly in a status (fromStatus null); transitions write their own. */
export async function recordEvent(db: Db, event: NewEvent): Promise<void> {
  await managerOf(db).insert(Event, { ...event, operationId: event.operationId ?? null });
}
