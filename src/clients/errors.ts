import { TailfleetError } from '../errors';

export type CloudApi = 'hetzner' | 'tailscale';

export interface CloudApiErrorInit {
  api: CloudApi;
  /** HTTP status, or 0 when no response arrived (network error, timeout, wait timeout). */
  status: number;
  code: string;
  message: string;
  /**
   * Whether trying again later may succeed. Independent of whether the client retried by itself:
   * a 503 on server creation is retryable (the job may try again after checking what exists) but the
   * client does not repeat it blindly because the server may have been created.
   */
  retryable: boolean;
  retryAfterMs?: number;
  method: string;
  path: string;
  attempts?: number;
  cause?: unknown;
}

export class CloudApiError extends TailfleetError {
  readonly api: CloudApi;
  /** A refusal the same request cannot turn around (a 4xx that is not retryable, other than 429). */
  readonly permanent: boolean;
  readonly status: number;
  readonly code: string;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly method: string;
  readonly path: string;
  readonly attempts: number;

  constructor(init: CloudApiErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'CloudApiError';
    this.api = init.api;
    this.status = init.status;
    this.code = init.code;
    this.retryable = init.retryable;
    this.permanent = !init.retryable && init.status >= 400 && init.status < 500 && init.status !== 429;
    this.retryAfterMs = init.retryAfterMs;
    this.method = init.method;
    this.path = init.path;
    this.attempts = init.attempts ?? 1;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      api: this.api,
      status: this.status,
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      retryAfterMs: this.retryAfterMs,
      method: this.method,
      path: this.path,
      attempts: this.attempts,
    };
  }
}

export interface FailedAction {
  id: number;
  command: string;
  status: string;
  error: { code: string; message: string } | null;
}

/** A Hetzner action that ended in status `error`; code and message are the action's own. */
export class ActionFailedError extends CloudApiError {
  readonly actionId: number;
  readonly command: string;

  constructor(action: FailedAction) {
    super({
      api: 'hetzner',
      status: 0,
      code: action.error?.code ?? 'action_failed',
      message: `Hetzner action ${action.id} (${action.command}) failed: ${action.error?.message ?? 'no error details'}`,
      // The action ran and failed; starting it again later (by a job retry) may well succeed.
      retryable: true,
      method: 'GET',
      path: `/actions/${action.id}`,
    });
    this.name = 'ActionFailedError';
    this.actionId = action.id;
    this.command = action.command;
  }
}

/** A wait (action, server status, device enrollment) that ran past its deadline. */
export class WaitTimeoutError extends CloudApiError {
  constructor(init: { api: CloudApi; code: string; message: string; path: string }) {
    super({ ...init, status: 0, retryable: true, method: 'GET' });
    this.name = 'WaitTimeoutError';
  }
}

export function isCloudApiError(err: unknown): err is CloudApiError {
  return err instanceof CloudApiError;
}

/** True when the operation may succeed if tried again later (transient failures, rate limits, timeouts). */
export function isRetryable(err: unknown): boolean {
  return err instanceof CloudApiError && err.retryable;
}

/**
 * Whether a failed write may still have been carried out: no answer (timeout, connection lost), a
 * 5xx, or a success the client could not use. Only a 4xx (429 included) says the API refused the
 * request before doing anything.
 */
export function mayHaveTakenEffect(err: unknown): boolean {
  return !(err instanceof CloudApiError && err.status >= 400 && err.status < 500);
}

export function isNotFound(err: unknown): boolean {
  return err instanceof CloudApiError && err.status === 404;
}

/**
 * A rejection handler for a request on one resource: `value` when the API answered 404 (a read finds
 * nothing, a delete finds it already gone), the error again otherwise.
 */
export const whenNotFound =
  <T>(value: T) =>
  (err: unknown): T => {
    if (isNotFound(err)) return value;
    throw err;
  };

export function isRateLimited(err: unknown): boolean {
  return err instanceof CloudApiError && err.status === 429;
}
