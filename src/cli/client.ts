import { jsonOf } from '../lib/json';

/**
 * The CLI's view of the HTTP API: one request path over the global fetch, every failure turned into
 * an error that knows how to say itself in one line.
 */

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  errors?: Array<{ path: string; message: string }>;
}

/** The API answered with a 4xx/5xx. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem | null,
    readonly body: string,
  ) {
    super(ApiError.describe(status, problem, body));
    this.name = 'ApiError';
  }

  /** `error 409 state-conflict: No running instance to stop` */
  static describe(status: number, problem: Problem | null, body: string): string {
    const kind = problem?.type?.split(':').pop() ?? problem?.title ?? 'http-error';
    let text = problem?.detail ?? problem?.title ?? (body.trim().slice(0, 200) || 'no details');
    if (problem?.errors && problem.errors.length > 0) text += ` (${problem.errors.map((e) => `${e.path}: ${e.message}`).join('; ')})`;
    return `error ${status} ${kind}: ${text}`.replace(/\s*\n\s*/g, ' ');
  }
}

/** Anything the user must fix before a request can be made, or a server that cannot be reached. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface ApiResponse<T> {
  status: number;
  /** The body exactly as the server sent it (what --json prints). */
  text: string;
  body: T;
}

export interface ClientOptions {
  baseUrl: string;
  token: string;
  /** Per request; a long poll adds its own wait to this. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export class TailfleetClient {
  private readonly baseUrl: string;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly fetch: typeof fetch;

  constructor(opts: ClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.fetch = opts.fetch ?? fetch;
  }

  get url(): string {
    return this.baseUrl;
  }

  async request<T = any>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${this.token}`, ...opts.headers };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetch(this.baseUrl + path, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = (err as Error).name === 'TimeoutError' ? 'no answer in time' : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw new CliError(`error: cannot reach ${this.baseUrl}: ${why}`);
    }
    const text = await res.text();
    // Not JSON (a proxy's error page, say): described from the text below.
    const body = jsonOf(text);
    if (res.status >= 400) {
      const problem = body && typeof body === 'object' ? (body as Problem) : null;
      throw new ApiError(res.status, problem, text);
    }
    return { status: res.status, text, body: body as T };
  }
}
