// The error classes live in src/errors.ts (one hierarchy); the persistence layer's are re-exported
// here so `from '../db'` keeps offering them beside the repositories that throw them.
export {
  AgentNameTakenError,
  AgentQuotaExceededError,
  GuardedUpdateConflictError,
  GuardedWriteConflictError,
  IdempotencyKeyConflictError,
  IllegalTransitionError,
  LiveInstanceExistsError,
  RecordNotFoundError,
  ServerIdConflictError,
  StateConflictError,
  TransitionConflictError,
} from '../errors';

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
