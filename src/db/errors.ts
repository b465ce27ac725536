import type { EventEntityType } from '../entities';

/** A guarded write found the row in a state that does not allow it: somebody else got there first. */
export abstract class StateConflictError extends Error {
  abstract readonly entity: EventEntityType;
  abstract readonly id: string;
}

export class TransitionConflictError extends StateConflictError {
  override readonly name = 'TransitionConflictError';
  constructor(
    readonly entity: EventEntityType,
    readonly id: string,
    /** Statuses the caller required. */
    readonly expected: readonly string[],
    /** Status found when re-reading after the guarded update matched nothing. */
    readonly actual: string,
    readonly to: string,
  ) {
    super(`${entity} ${id} cannot move to ${to}: status is ${actual}, expected ${expected.join(' or ')}`);
  }
}

/** setServerId refused: the instance already has another server, or has left pending/provisioning. */
export class ServerIdConflictError extends StateConflictError {
  override readonly name = 'ServerIdConflictError';
  readonly entity = 'instance' as const;
  constructor(
    readonly id: string,
    readonly serverId: string,
    readonly actualServerId: string | null,
    readonly actualStatus: string,
  ) {
    super(
      `instance ${id} cannot record server ${serverId}: it has server ${actualServerId ?? 'none'} in status ${actualStatus}`,
    );
  }
}

/** A guarded non-status update (device, progress, …) found the row in a status that forbids it. */
export class GuardedUpdateConflictError extends StateConflictError {
  override readonly name = 'GuardedUpdateConflictError';
  constructor(
    readonly entity: EventEntityType,
    readonly id: string,
    readonly what: string,
    readonly actualStatus: string,
  ) {
    super(`${entity} ${id} cannot ${what} in status ${actualStatus}`);
  }
}

export class RecordNotFoundError extends Error {
  override readonly name = 'RecordNotFoundError';
  constructor(
    readonly entity: EventEntityType,
    readonly id: string,
  ) {
    super(`${entity} ${id} not found`);
  }
}

/** A move that is not in the transition table: a bug in the caller, never a runtime race. */
export class IllegalTransitionError extends Error {
  override readonly name = 'IllegalTransitionError';
  constructor(
    readonly entity: EventEntityType,
    readonly from: readonly string[],
    readonly to: string,
    detail: string,
  ) {
    super(`illegal ${entity} transition [${from.join(', ')}] → ${to}: ${detail}`);
  }
}

/** PostgreSQL SQLSTATE of an error thrown by pg through TypeORM, if any. */
export function pgErrorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; driverError?: { code?: unknown } } | null;
  const code = e?.driverError?.code ?? e?.code;
  return typeof code === 'string' ? code : undefined;
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  if (pgErrorCode(err) !== '23505') return false;
  if (!constraint) return true;
  const e = err as { constraint?: unknown; driverError?: { constraint?: unknown } };
  return (e.driverError?.constraint ?? e.constraint) === constraint;
}

/** The database refused a second live instance for one agent (partial unique index uq_instances_live_agent). */
export class LiveInstanceExistsError extends StateConflictError {
  override readonly name = 'LiveInstanceExistsError';
  readonly entity = 'agent' as const;
  constructor(readonly id: string) {
    super(`agent ${id} already has a live instance`);
  }
}

/** An Idempotency-Key already names an operation of another type or for another agent. */
export class IdempotencyKeyConflictError extends Error {
  override readonly name = 'IdempotencyKeyConflictError';
  constructor(
    readonly idempotencyKey: string,
    readonly existingOperationId: string,
  ) {
    super(`idempotency key ${JSON.stringify(idempotencyKey)} was already used for operation ${existingOperationId}`);
  }
}
