import { isIPv6 } from 'node:net';
import type { Request } from 'express';
import { jsonOf } from '../lib/json';

/**
 * The console is a client of the /v1 API, in the same process: each page reads through it and each
 * form posts to it, with the session's token. So a page can never show or do more than the token
 * may, and every rule of the API (scopes, validation, idempotency, audit actors) applies unchanged.
 */

export interface ApiAnswer<T = any> {
  status: number;
  body: T;
  ok: boolean;
}

export class ConsoleApi {
  constructor(
    private readonly base: string,
    private readonly token: string,
    private readonly requestId?: string,
  ) {}

  /** The API of the server that received `req`, over the connection's own local address. */
  static of(req: Request, token: string, requestId?: string): ConsoleApi {
    const address = req.socket.localAddress ?? '127.0.0.1';
    const host = isIPv6(address) ? `[${address}]` : address;
    return new ConsoleApi(`http://${host}:${req.socket.localPort}`, token, requestId);
  }

  get baseUrl(): string {
    return this.base;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, ...(this.requestId ? { 'x-request-id': this.requestId } : {}), ...extra };
  }

  async call<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiAnswer<T>> {
    const res = await fetch(this.base + path, {
      method,
      headers: this.headers(body === undefined ? headers : { 'content-type': 'application/json', ...headers }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const parsed = jsonOf(await res.text(), (text) => ({ detail: text.slice(0, 200) }));
    return { status: res.status, body: parsed as T, ok: res.ok };
  }

  get<T = any>(path: string): Promise<ApiAnswer<T>> {
    return this.call<T>('GET', path);
  }
}

/** A query string from the defined values (arrays repeat the key). */
export function qs(params: Record<string, string | number | string[] | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) for (const item of v) q.append(k, item);
    else if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The problem's detail of a refused call, for a notice on the page. */
export function problemText(answer: ApiAnswer): string {
  const b = answer.body as { detail?: string; title?: string; errors?: Array<{ path: string; message: string }> } | undefined;
  const fields = b?.errors?.map((e) => `${e.path} ${e.message}`).join('; ');
  return [b?.detail ?? b?.title ?? `The API answered ${answer.status}.`, fields].filter(Boolean).join(' ');
}
