import pino from 'pino';
import { CloudApi, CloudApiError } from './errors';
import { fetchTransport, nodeTransport, type Transport, type TransportResponse } from './transport';

/** One finished attempt, for metrics. `route` is templated (`/servers/{id}`) to keep label cardinality low. */
export interface CloudRequestEvent {
  api: CloudApi;
  method: string;
  route: string;
  status: number | 'network' | 'timeout';
  durationMs: number;
  rateLimitRemaining?: number;
  rateLimitLimit?: number;
}

/** Why the client sends a request again: a 429, a transient failure, or a fresh credential after a 401. */
export type CloudRetryReason = 'rate_limited' | 'transient' | 'auth_refresh';

export interface CloudRetryEvent {
  api: CloudApi;
  method: string;
  route: string;
  reason: CloudRetryReason;
}

export interface CloudRequestObserver {
  onRequest(e: CloudRequestEvent): void;
  onRetry?(e: CloudRetryEvent): void;
}

type LogFn = (objOrMsg: object | string, msg?: string) => void;

/** The part of a pino logger the clients use. */
export interface ClientLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

export const silentClientLogger: ClientLogger = pino({ level: 'silent' });

/** The clients' default wait (they depend on nothing else of the service, so they bring their own). */
export const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * How the API refills its budget. Hetzner documents `refill`: the remaining count grows by
 * limit/hour continuously and `RateLimit-Reset` is when it will be full again. `window` is the
 * fixed-window reading (nothing comes back before the reset), the safe assumption when an API does
 * not say.
 */
export type RateLimitModel = 'refill' | 'window';

export interface RateLimitState {
  limit?: number;
  remaining?: number;
  /** Epoch milliseconds. */
  resetAt?: number;
  blockedUntil: number;
}

/**
 * Rate-limit state shared by every request of one client (one token), so concurrent callers see the
 * same budget and queue behind each other instead of all spending the last requests at once.
 */
export class RateLimiter {
  private limit?: number;
  private remaining?: number;
  private resetAt?: number;
  private blockedUntil = 0;
  private lastGrantAt = Number.NEGATIVE_INFINITY;
  /** Reservations whose request has not been answered yet (waiting to be sent, or sent). */
  private inFlight = 0;
  private readonly model: RateLimitModel;
  private readonly paceBelow: number;
  private readonly now: () => number;

  constructor(opts: { model?: RateLimitModel; paceBelowFraction?: number; now?: () => number } = {}) {
    this.model = opts.model ?? 'refill';
    this.paceBelow = opts.paceBelowFraction ?? 0.1;
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds the caller must wait before sending; the slot is reserved as a side effect. */
  reserve(): number {
    const now = this.now();
    let at = Math.max(now, this.blockedUntil);
    const spacing = this.spacingMs(at);
    if (spacing > 0) at = Math.max(at, this.lastGrantAt + spacing);
    this.lastGrantAt = at;
    this.inFlight++;
    // Count the request against the budget now; the response will correct the estimate.
    if (this.remaining !== undefined) this.remaining = Math.max(0, this.remaining - 1);
    return at - now;
  }

  /**
   * A reserved request was answered (`h`: its rate-limit headers) or given up (no headers). The
   * budget a response reports does not count the requests still in flight beside it, each of which
   * will spend one: without subtracting them, a burst's first answers would report a budget the
   * rest of the burst has already spent, and the pacing would start too late.
   */
  settle(h?: { limit?: number; remaining?: number; resetAt?: number }): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    if (h) this.observe(h, this.inFlight);
  }

  observe(h: { limit?: number; remaining?: number; resetAt?: number }, inFlight = 0): void {
    if (h.limit !== undefined) this.limit = h.limit;
    if (h.remaining !== undefined) this.remaining = Math.max(0, h.remaining - inFlight);
    if (h.resetAt !== undefined) this.resetAt = h.resetAt;
  }

  /** After a 429 nobody sends until `until`, not just the caller that was refused. */
  blockUntil(until: number): void {
    this.blockedUntil = Math.max(this.blockedUntil, until);
  }

  state(): RateLimitState {
    return { limit: this.limit, remaining: this.remaining, resetAt: this.resetAt, blockedUntil: this.blockedUntil };
  }

  private spacingMs(at: number): number {
    const { limit, remaining, resetAt } = this;
    if (limit === undefined || remaining === undefined || resetAt === undefined) return 0;
    const threshold = Math.max(1, limit * this.paceBelow);
    if (remaining >= threshold) return 0;
    const untilReset = resetAt - at;
    if (untilReset <= 0) return 0;
    if (this.model === 'window') return untilReset / Math.max(1, remaining);
    // Spend between 1x (at the threshold) and 0.5x (at zero) of the refill rate, so the budget
    // drifts back up instead of reaching zero and costing everyone a 429.
    const refillIntervalMs = untilReset / Math.max(1, limit - remaining);
    return Math.min(untilReset, refillIntervalMs * (2 - remaining / threshold));
  }
}

/** Supplies the Authorization header; `invalidate` lets the core fetch a fresh credential once after a 401. */
export interface AuthProvider {
  header(): Promise<string>;
  /** Forget `rejected` if it is still the current credential; true when a retry may help. */
  invalidate?(rejected: string): boolean;
}

type QueryValue = string | number | boolean | undefined | ReadonlyArray<string | number>;

export interface CloudRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Concrete path below baseUrl, e.g. `/servers/42`. */
  path: string;
  /** Templated path for metrics and logs, e.g. `/servers/{id}`. */
  route: string;
  query?: Record<string, QueryValue>;
  json?: unknown;
  form?: Record<string, string>;
  /**
   * Safe to send again after an ambiguous failure (timeout, network error, 5xx, conflict, locked):
   * a repeat cannot do anything the first attempt did not. A 429 is always retried because the API
   * refused the request before doing anything.
   */
  idempotent: boolean;
  /** Defaults to true; the OAuth token request authenticates with its form body instead. */
  auth?: boolean;
  /** Message for a 401 on this request, e.g. "Hetzner API rejected the token". */
  unauthorizedMessage?: string;
  /** What to check after a 401 on this request (default: the client's), e.g. the setting holding the credential. */
  unauthorizedHint?: string;
}

export interface CloudResponse<T> {
  status: number;
  body: T;
}

/** The request-path settings both clients take and hand to their RequestCore unchanged. */
export type RequestPolicy = Pick<
  RequestCoreOptions,
  | 'fetch'
  | 'random'
  | 'observer'
  | 'requestTimeoutMs'
  | 'maxRetries'
  | 'retryBaseDelayMs'
  | 'retryMaxDelayMs'
  | 'maxRateLimitWaitMs'
  | 'maxRateLimitRetries'
  | 'rateLimiter'
>;

/** What a cloud client is built with besides its policy: where it logs, how it waits and what time it is (tests pass their own). */
export interface ClientRuntime {
  logger?: ClientLogger;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/** The runtime with its defaults: a silent logger, real timers and the system clock. */
export function runtimeOf(deps: ClientRuntime): Required<ClientRuntime> {
  return { logger: deps.logger ?? silentClientLogger, sleep: deps.sleep ?? defaultSleep, now: deps.now ?? Date.now };
}

export function requestPolicyOf(deps: RequestPolicy): RequestPolicy {
  return {
    fetch: deps.fetch,
    random: deps.random,
    observer: deps.observer,
    requestTimeoutMs: deps.requestTimeoutMs,
    maxRetries: deps.maxRetries,
    retryBaseDelayMs: deps.retryBaseDelayMs,
    retryMaxDelayMs: deps.retryMaxDelayMs,
    maxRateLimitWaitMs: deps.maxRateLimitWaitMs,
    maxRateLimitRetries: deps.maxRateLimitRetries,
    rateLimiter: deps.rateLimiter,
  };
}

export interface RequestCoreOptions extends ClientRuntime {
  api: CloudApi;
  baseUrl: string;
  /** Sends with this fetch instead of node:http (a test's interceptor of the requests); default node:http keep-alive. */
  fetch?: typeof fetch;
  /** Source of jitter in [0, 1). */
  random?: () => number;
  observer?: CloudRequestObserver;
  auth?: AuthProvider;
  /** Strings that must never appear in an error message (tokens, client secrets). */
  secrets?: () => Array<string | undefined>;
  /**
   * Named in the message of a 401 ("… (401 unauthorized): check HETZNER_API_TOKEN"): a rejected
   * credential is a configuration error that only the operator can fix.
   */
  unauthorizedHint?: string;
  requestTimeoutMs?: number;
  maxRetries?: number;
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  maxRateLimitWaitMs?: number;
  /** 429s are retried apart from `maxRetries`, up to this many per call. */
  maxRateLimitRetries?: number;
  rateLimiter?: RateLimiter;
  rateLimitModel?: RateLimitModel;
}

const API_NAMES: Record<CloudApi, string> = { hetzner: 'Hetzner', tailscale: 'Tailscale' };

const CODE_BY_STATUS: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  408: 'timeout',
  409: 'conflict',
  422: 'invalid_input',
  423: 'locked',
  429: 'rate_limit_exceeded',
  500: 'server_error',
  501: 'not_implemented',
  502: 'bad_gateway',
  503: 'unavailable',
  504: 'timeout',
};

/** Whether a failure with this status/code may go away by itself. */
export function isTransientStatus(status: number, code: string): boolean {
  if (status === 429 || status === 408) return true;
  if (status >= 500) return status !== 501;
  // `uniqueness_error` (409) and `protected` (423) are answers, not passing states.
  if (status === 409) return code === 'conflict';
  if (status === 423) return code === 'locked';
  return false;
}

/** Parses `Retry-After` (seconds or an HTTP date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** `RateLimit-*` headers; Reset is a UNIX timestamp (Hetzner) or, if small, seconds from now (IETF draft). */
export function parseRateLimitHeaders(
  headers: Pick<Headers, 'get'>,
  now: number,
): { limit?: number; remaining?: number; resetAt?: number } {
  const num = (name: string) => {
    const raw = headers.get(name);
    if (raw === null || raw.trim() === '') return undefined;
    const n = Number(raw);
    return Number.isFinite(n) ? n : undefined;
  };
  const reset = num('ratelimit-reset');
  let resetAt: number | undefined;
  if (reset !== undefined) resetAt = reset > 1e9 ? reset * 1000 : now + reset * 1000;
  return { limit: num('ratelimit-limit'), remaining: num('ratelimit-remaining'), resetAt };
}

class TimeoutSignal extends Error {}

type Attempt =
  | { kind: 'response'; status: number; headers: TransportResponse['headers']; body: unknown; rateLimit: ReturnType<typeof parseRateLimitHeaders> }
  | { kind: 'network'; error: unknown }
  | { kind: 'timeout' };

/**
 * The one request path both clients use: timeout per attempt, shared rate-limit pacing, 429 waits,
 * retries with exponential backoff and full jitter for calls that are safe to repeat, typed errors.
 */
export class RequestCore {
  readonly api: CloudApi;
  readonly rateLimiter: RateLimiter;
  private readonly baseUrl: string;
  private readonly transport: Transport;
  private readonly sleepFn: (ms: number) => Promise<void>;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly logger: ClientLogger;
  private readonly observer?: CloudRequestObserver;
  private readonly auth?: AuthProvider;
  private readonly secrets: () => Array<string | undefined>;
  private readonly unauthorizedHint?: string;
  private readonly requestTimeoutMs: number;
  private readonly maxRetries: number;
  private readonly retryBaseDelayMs: number;
  private readonly retryMaxDelayMs: number;
  private readonly maxRateLimitWaitMs: number;
  private readonly maxRateLimitRetries: number;

  constructor(opts: RequestCoreOptions) {
    this.api = opts.api;
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.transport = opts.fetch ? fetchTransport(opts.fetch) : nodeTransport;
    this.sleepFn = opts.sleep ?? defaultSleep;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.logger = opts.logger ?? silentClientLogger;
    this.observer = opts.observer;
    this.auth = opts.auth;
    this.secrets = opts.secrets ?? (() => []);
    this.unauthorizedHint = opts.unauthorizedHint;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 15_000;
    this.maxRetries = opts.maxRetries ?? 5;
    this.retryBaseDelayMs = opts.retryBaseDelayMs ?? 500;
    this.retryMaxDelayMs = opts.retryMaxDelayMs ?? 15_000;
    this.maxRateLimitWaitMs = opts.maxRateLimitWaitMs ?? 60_000;
    // Few: past this the caller (a queue) is better off pausing than holding a job for many minutes.
    this.maxRateLimitRetries = opts.maxRateLimitRetries ?? 3;
    this.rateLimiter = opts.rateLimiter ?? new RateLimiter({ model: opts.rateLimitModel, now: this.now });
  }

  async request<T>(req: CloudRequest): Promise<T> {
    return (await this.send<T>(req)).body;
  }

  async send<T>(req: CloudRequest): Promise<CloudResponse<T>> {
    let retries = 0;
    let rateLimitRetries = 0;
    let refreshedAuth = false;
    for (let attempt = 1; ; attempt++) {
      const wait = this.rateLimiter.reserve();
      let sent = false;
      let result: Attempt;
      let authHeader: string | undefined;
      try {
        if (wait > 0) await this.sleepFn(wait);
        authHeader = req.auth === false || !this.auth ? undefined : await this.auth.header();
        sent = true;
        // attempt() settles the reservation with what the answer says, before anyone hears of it.
        result = await this.attempt(req, authHeader);
      } finally {
        // A reservation whose request never went (no credential could be had) is settled here.
        if (!sent) this.rateLimiter.settle();
      }

      if (result.kind === 'response' && result.status >= 200 && result.status < 300) {
        return { status: result.status, body: result.body as T };
      }
      const err = this.toError(req, result, attempt);

      if (err.status === 401 && authHeader && this.auth?.invalidate && !refreshedAuth) {
        refreshedAuth = true;
        if (this.auth.invalidate(authHeader)) {
          this.notifyRetry(req, 'auth_refresh');
          continue;
        }
      }

      if (err.status === 429) {
        if (rateLimitRetries >= this.maxRateLimitRetries) throw err;
        rateLimitRetries++;
        const waitMs = err.retryAfterMs ?? this.backoffMs(rateLimitRetries);
        this.rateLimiter.blockUntil(this.now() + waitMs);
        this.notifyRetry(req, 'rate_limited');
        this.logger.warn(
          { api: this.api, method: req.method, route: req.route, waitMs },
          `[${API_NAMES[this.api]}] Rate limited, waiting ${Math.round(waitMs)} ms before retrying`,
        );
        continue;
      }

      if (err.retryable && req.idempotent && retries < this.maxRetries) {
        retries++;
        const delay = this.backoffMs(retries);
        this.logger.debug(
          { api: this.api, method: req.method, route: req.route, status: err.status, code: err.code, retry: retries, delay },
          `[${API_NAMES[this.api]}] ${req.method} ${req.route} failed (${err.code}), retrying`,
        );
        this.notifyRetry(req, 'transient');
        await this.sleepFn(delay);
        continue;
      }
      throw err;
    }
  }

  private notifyRetry(req: CloudRequest, reason: CloudRetryReason): void {
    try {
      this.observer?.onRetry?.({ api: this.api, method: req.method, route: req.route, reason });
    } catch (err) {
      this.logger.error({ err }, 'Cloud request observer failed');
    }
  }

  private backoffMs(retry: number): number {
    const ceiling = Math.min(this.retryMaxDelayMs, this.retryBaseDelayMs * 2 ** (retry - 1));
    return this.random() * ceiling;
  }

  private buildUrl(req: CloudRequest): string {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(req.query ?? {})) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) params.append(key, String(v));
      else params.append(key, String(value));
    }
    const qs = params.toString();
    return `${this.baseUrl}${req.path}${qs ? `?${qs}` : ''}`;
  }

  private async attempt(req: CloudRequest, authHeader: string | undefined): Promise<Attempt> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (authHeader) headers.authorization = authHeader;
    let body: string | undefined;
    if (req.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(req.form).toString();
    } else if (req.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(req.json);
    }

    const controller = new AbortController();
    let timedOut = false;
    // The timer covers the body as well as the headers: a server that stalls mid-body is as stuck.
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new TimeoutSignal());
    }, this.requestTimeoutMs);
    const started = this.now();
    let result: Attempt;
    try {
      const res = await this.transport(this.buildUrl(req), { method: req.method, headers, body, signal: controller.signal });
      result = { kind: 'response', status: res.status, headers: res.headers, body: parseBody(res.text), rateLimit: parseRateLimitHeaders(res.headers, this.now()) };
    } catch (error) {
      result = timedOut ? { kind: 'timeout' } : { kind: 'network', error };
    } finally {
      clearTimeout(timer);
    }

    const event: CloudRequestEvent = {
      api: this.api,
      method: req.method,
      route: req.route,
      status: result.kind === 'response' ? result.status : result.kind,
      durationMs: this.now() - started,
    };
    this.rateLimiter.settle(result.kind === 'response' ? result.rateLimit : undefined);
    if (result.kind === 'response') {
      event.rateLimitLimit = result.rateLimit.limit;
      event.rateLimitRemaining = result.rateLimit.remaining;
    }
    try {
      this.observer?.onRequest(event);
    } catch (err) {
      this.logger.error({ err }, 'Cloud request observer failed');
    }
    return result;
  }

  private toError(req: CloudRequest, result: Attempt, attempts: number): CloudApiError {
    const name = API_NAMES[this.api];
    const base = { api: this.api, method: req.method, path: req.path, attempts };
    if (result.kind === 'timeout') {
      return new CloudApiError({
        ...base,
        status: 0,
        code: 'timeout',
        retryable: true,
        message: `${name} API ${req.method} ${req.path} timed out after ${this.requestTimeoutMs} ms`,
      });
    }
    if (result.kind === 'network') {
      const reason = describeNetworkError(result.error);
      return new CloudApiError({
        ...base,
        status: 0,
        code: 'network_error',
        retryable: true,
        message: this.redact(`${name} API ${req.method} ${req.path} failed: network error (${reason})`),
      });
    }

    const { status, headers, body } = result;
    const { code: bodyCode, message: bodyMessage } = errorFields(body);
    const code = bodyCode ?? CODE_BY_STATUS[status] ?? `http_${status}`;
    let message: string;
    if (status === 401) {
      message = `${req.unauthorizedMessage ?? `${name} API rejected the token`} (401 ${code})`;
      const hint = req.unauthorizedHint ?? this.unauthorizedHint;
      if (hint) message += `: check ${hint}`;
    } else if (status === 403) {
      message = `${name} API refused ${req.method} ${req.path}: the credentials lack permission (403 ${code})`;
      if (bodyMessage) message += `: ${bodyMessage}`;
    } else {
      message = `${name} API ${req.method} ${req.path} failed (${status} ${code})`;
      if (bodyMessage) message += `: ${bodyMessage}`;
    }

    let retryAfterMs: number | undefined;
    if (status === 429) {
      const now = this.now();
      const retryAfter = parseRetryAfter(headers.get('retry-after'), now);
      const resetAt = parseRateLimitHeaders(headers, now).resetAt;
      const untilReset = resetAt === undefined ? undefined : Math.max(0, resetAt - now);
      const wanted = retryAfter ?? untilReset;
      if (wanted !== undefined) retryAfterMs = Math.min(this.maxRateLimitWaitMs, wanted);
    } else {
      retryAfterMs = parseRetryAfter(headers.get('retry-after'), this.now());
    }

    return new CloudApiError({
      ...base,
      status,
      code,
      retryable: isTransientStatus(status, code),
      retryAfterMs,
      message: this.redact(message),
    });
  }

  private redact(message: string): string {
    let out = message;
    for (const secret of this.secrets()) {
      // Very short strings are not real credentials and would mangle ordinary words.
      if (secret && secret.length >= 8) out = out.split(secret).join('[redacted]');
    }
    return out;
  }
}

function parseBody(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Hetzner: `{error: {code, message}}`; Tailscale: `{message}`. */
function errorFields(body: unknown): { code?: string; message?: string } {
  if (!body || typeof body !== 'object') {
    return typeof body === 'string' && body.length > 0 ? { message: body.slice(0, 200) } : {};
  }
  const b = body as { error?: unknown; message?: unknown; code?: unknown };
  if (b.error && typeof b.error === 'object') {
    const e = b.error as { code?: unknown; message?: unknown };
    return {
      code: typeof e.code === 'string' ? e.code : undefined,
      message: typeof e.message === 'string' ? e.message : undefined,
    };
  }
  // OAuth token errors (RFC 6749): `{error: "invalid_client", error_description | message}`.
  const oauthCode = typeof b.error === 'string' ? b.error : undefined;
  const description = (b as { error_description?: unknown }).error_description;
  return {
    code: typeof b.code === 'string' ? b.code : oauthCode,
    message:
      typeof b.message === 'string' ? b.message : typeof description === 'string' ? description : undefined,
  };
}

function describeNetworkError(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? cause.message : undefined;
    return detail ? `${error.message}: ${detail}` : error.message;
  }
  return String(error);
}
