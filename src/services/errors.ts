// Kept so existing imports stay valid; the classes live in src/errors.ts.
export { isPermanentError, NotFoundError, StateConflictError, TailfleetError as LifecycleError } from '../errors';
