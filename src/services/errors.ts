/**
 * Errors the lifecycle service raises on purpose. `permanent` tells a processor that trying the same
 * job again cannot help (the agent does not exist, or its state does not allow the operation), so it
 * should stop retrying; cloud errors (`CloudApiError`) carry their own `retryable` flag instead.
 */
export abstract class LifecycleError extends Error {
  abstract readonly permanent: boolean;
  abstract readonly code: string;
}

/** An agent, instance or provisioning job that does not exist. */
export class NotFoundError extends LifecycleError {
  readonly permanent = true;
  readonly code = 'not_found';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NotFoundError';
  }
}

/**
 * The current state does not allow the operation, or another operation changed it first (the loser
 * of a guarded transition lands here).
 */
export class StateConflictError extends LifecycleError {
  readonly permanent = true;
  readonly code = 'state_conflict';
  /** True when a guarded write lost to another operation (as opposed to a state that never allowed the request). */
  readonly lostRace: boolean;

  constructor(message: string, options?: { cause?: unknown; lostRace?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StateConflictError';
    this.lostRace = options?.lostRace ?? false;
  }
}

export function isPermanentError(err: unknown): boolean {
  return err instanceof LifecycleError && err.permanent;
}
