import type { DataSource } from 'typeorm';
import { GuardedWriteConflictError, NotFoundError, RecordNotFoundError, StateConflictError } from '../errors';
import { transition, transitionTogether, type Db, type NewEvent, type TransitionRequest } from '../db/transitions';
import type { EventEntityType } from '../entities';

/**
 * The persistence layer's guarded writes, with a lost race turned into a plain StateConflictError
 * (lostRace) and a missing row into a NotFoundError: both permanent for the job that ran into them.
 */
export async function guarded<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (err instanceof GuardedWriteConflictError) throw new StateConflictError(err.message, { cause: err, lostRace: true });
    if (err instanceof RecordNotFoundError) throw new NotFoundError(err.message, { cause: err });
    throw err;
  }
}

/** One guarded transition. Returns false when allowSame found the row already there. */
export async function move<K extends EventEntityType>(db: Db, req: TransitionRequest<K>): Promise<boolean> {
  return (await guarded(() => transition(db, req))).changed;
}

/** Moves that belong together (instance and agent, …) as one statement: all of them or none, with `events` when they happen. */
export async function moveTogether(ds: DataSource, requests: readonly TransitionRequest[], events: readonly NewEvent[] = []): Promise<void> {
  await guarded(() => transitionTogether(ds, requests, events));
}

// The workflows take it from here, beside the moves whose failures it words.
export { errorMessage } from '../errors';
