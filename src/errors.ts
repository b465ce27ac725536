import type { EventEntityType } from './entities';

/**
 * Every error tailfleet raises on purpose, in one hierarchy: what is missing (NotFoundError), what
 * the state does not allow (StateConflictError), a name already in use (NameTakenError), what it
 * was given and cannot act on (InvalidInputError), what did not answer (UnavailableError), and a few
 * of their own kind (a cloud API's answer, src/clients/errors; an HTTP problem, src/api/problem). `permanent` tells a processor
 * that trying the same job again cannot help, so it should stop retrying (true of every
 * PermanentError); `code` names the kind of failure for logs and clients.
 */
export abstract class TailfleetError extends Error {
  abstract readonly permanent: boolean;
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
  }
}

/** A kind of failure that trying the same job again can never help. */
export abstract class PermanentError extends TailfleetError {
  readonly permanent = true;
}

/** An agent, instance, provisioning job or operation that does not exist. */
export class NotFoundError extends PermanentError {
  override name = 'NotFoundError';
  readonly code = 'not_found';
}

/**
 * The current state does not allow the operation, or another operation changed it first (the loser
 * of a guarded write lands here, as one of the subclasses below or wrapped by a workflow).
 */
export class StateConflictError extends PermanentError {
  readonly code = 'state_conflict';
  /** True when a guarded write lost to another operation (as opposed to a state that never allowed the request). */
  readonly lostRace: boolean;

  constructor(message: string, options?: { cause?: unknown; lostRace?: boolean }) {
    super(message, options);
    this.name = 'StateConflictError';
    this.lostRace = options?.lostRace ?? false;
  }
}

/** A guarded write of the persistence layer found the row in a state that does not allow it: somebody else got there first. */
export abstract class GuardedWriteConflictError extends StateConflictError {
  abstract readonly entity: EventEntityType;
  abstract readonly id: string;

  constructor(message: string) {
    super(message, { lostRace: true });
  }
}

export class TransitionConflictError extends GuardedWriteConflictError {
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

/** setServer refused: the instance already has another server, or has left pending/provisioning. */
export class ServerIdConflictError extends GuardedWriteConflictError {
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
export class GuardedUpdateConflictError extends GuardedWriteConflictError {
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

/** The database refused a second live instance for one agent (partial unique index uq_instances_live_agent). */
export class LiveInstanceExistsError extends GuardedWriteConflictError {
  override readonly name = 'LiveInstanceExistsError';
  readonly entity = 'agent' as const;
  constructor(readonly id: string) {
    super(`agent ${id} already has a live instance`);
  }
}

/** A row the persistence layer was asked to read or change does not exist. */
export class RecordNotFoundError extends NotFoundError {
  override readonly name = 'RecordNotFoundError';
  constructor(
    readonly entity: EventEntityType,
    readonly id: string,
  ) {
    super(`${entity} ${id} not found`);
  }
}

/** A move that is not in the transition table: a bug in the caller, never a runtime race. */
export class IllegalTransitionError extends PermanentError {
  override readonly name = 'IllegalTransitionError';
  readonly code = 'illegal_transition';
  constructor(
    readonly entity: EventEntityType,
    readonly from: readonly string[],
    readonly to: string,
    detail: string,
  ) {
    super(`illegal ${entity} transition [${from.join(', ')}] → ${to}: ${detail}`);
  }
}

/**
 * What tailfleet was given (a request, a job's payload, its environment, a webhook URL) is not
 * something it can act on: the same input again cannot help.
 */
export class InvalidInputError extends TailfleetError {
  override name = 'InvalidInputError';
  // Not a PermanentError: one of its kinds is worth another attempt (WebhookDnsError at delivery).
  readonly permanent: boolean = true;
  readonly code: string = 'invalid_input';
}

/**
 * An Idempotency-Key already names an operation of another type or for another agent (the API
 * answers it as IdempotencyKeyReuseError, a 422).
 */
export class IdempotencyKeyConflictError extends InvalidInputError {
  override readonly name = 'IdempotencyKeyConflictError';
  override readonly code = 'idempotency_key_conflict';
  constructor(
    readonly idempotencyKey: string,
    readonly existingOperationId: string,
  ) {
    super(`idempotency key ${JSON.stringify(idempotencyKey)} was already used for operation ${existingOperationId}`);
  }
}

/** A list cursor that this API did not hand out (a 400 on query.cursor). */
export class InvalidCursorError extends InvalidInputError {
  override readonly name = 'InvalidCursorError';
  override readonly code = 'invalid_cursor';

  constructor(message = 'The cursor is not one this API handed out.') {
    super(message);
  }
}

/**
 * Something tailfleet depends on did not answer in time, could not be read, or is busy with another
 * caller: the same request a little later may well succeed.
 */
export class UnavailableError extends TailfleetError {
  override name = 'UnavailableError';
  readonly permanent = false;
  readonly code: string = 'unavailable';
}

/** The message of anything thrown: an Error's (its name when the message is empty), else the value as text. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

export function isPermanentError(err: unknown): boolean {
  return err instanceof TailfleetError && err.permanent;
}

/** Another live record of the kind already has this name (a partial unique index said so). */
export abstract class NameTakenError extends PermanentError {
  readonly code = 'name_taken';
}

/** Another agent that is not destroyed has this name (partial unique index uq_agents_live_name). */
export class AgentNameTakenError extends NameTakenError {
  override readonly name = 'AgentNameTakenError';
  constructor(
    readonly agentName: string,
    /** The agent holding the name, when it could be read. */
    readonly existingAgentId: string | null = null,
  ) {
    super(`An agent named ${agentName} already exists${existingAgentId ? ` (${existingAgentId})` : ''}`);
  }
}

/** Another pool has this name. */
export class PoolNameTakenError extends NameTakenError {
  override readonly name = 'PoolNameTakenError';
  constructor(readonly poolName: string) {
    super(`A pool named ${poolName} already exists`);
  }
}

/** MAX_AGENTS live agents exist already. */
export class AgentQuotaExceededError extends PermanentError {
  override readonly name = 'AgentQuotaExceededError';
  readonly code = 'quota_exceeded';
  constructor(readonly limit: number) {
    super(`The fleet already has its maximum of ${limit} agents that are not destroyed (MAX_AGENTS)`);
  }
}

/**
 * The ownership guard (src/fleet/ownership-guard.ts) refused a destructive call on a resource whose
 * evidence of being this fleet's did not agree. Retrying cannot make a foreign resource ours.
 */
export class OwnershipRefusedError extends PermanentError {
  readonly code = 'ownership_refused';

  constructor(message: string) {
    super(message);
    this.name = 'OwnershipRefusedError';
  }
}

/** An expiry later than MAX_AGENT_LIFETIME_HOURS after the agent's creation (422 lifetime-exceeded). */
export class LifetimeExceededError extends PermanentError {
  override readonly name = 'LifetimeExceededError';
  readonly code = 'lifetime_exceeded';
  constructor(
    readonly maxLifetimeHours: number,
    readonly latest: Date,
  ) {
    super(`The fleet's agents live at most ${maxLifetimeHours} h (MAX_AGENT_LIFETIME_HOURS): this agent can expire no later than ${latest.toISOString()}`);
  }
}
