import type { IncomingHttpHeaders } from 'node:http';

export interface SimRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  rawBody: string;
  params: Record<string, string>;
}

export interface SimResponse {
  status: number;
  /** Serialised as JSON; undefined = empty body. */
  body?: unknown;
  headers?: Record<string, string>;
}

export type Handler = (req: SimRequest) => SimResponse;

interface Route {
  method: string;
  template: string;
  segments: string[];
  handler: Handler;
}

export type RouteMatch =
  | { kind: 'found'; template: string; handler: Handler; params: Record<string, string> }
  | { kind: 'method_not_allowed'; template: string }
  | { kind: 'not_found' };

/** Path templates with `{param}` segments; routes are bucketed by segment count to keep lookups short. */
export class Router {
  private readonly bySegmentCount = new Map<number, Route[]>();
  readonly templates = new Set<string>();

  add(method: string, template: string, handler: Handler): this {
    const segments = template.split('/').slice(1);
    const list = this.bySegmentCount.get(segments.length) ?? [];
    list.push({ method, template, segments, handler });
    this.bySegmentCount.set(segments.length, list);
    this.templates.add(template);
    return this;
  }

  match(method: string, path: string): RouteMatch {
    const parts = path.split('/').slice(1);
    if (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
    const candidates = this.bySegmentCount.get(parts.length);
    if (!candidates) return { kind: 'not_found' };
    let wrongMethod: string | undefined;
    for (const route of candidates) {
      const params = matchSegments(route.segments, parts);
      if (!params) continue;
      if (route.method === method) return { kind: 'found', template: route.template, handler: route.handler, params };
      wrongMethod ??= route.template;
    }
    return wrongMethod ? { kind: 'method_not_allowed', template: wrongMethod } : { kind: 'not_found' };
  }
}

function matchSegments(segments: string[], parts: string[]): Record<string, string> | undefined {
  let params: Record<string, string> | undefined;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (seg.charCodeAt(0) === 123 /* { */) {
      if (parts[i] === '') return undefined;
      (params ??= {})[seg.slice(1, -1)] = safeDecode(parts[i]);
    } else if (seg !== parts[i]) {
      return undefined;
    }
  }
  return params ?? {};
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export class BodyParseError extends Error {}

export function parseJsonBody(req: SimRequest): unknown {
  if (req.rawBody.trim() === '') return undefined;
  try {
    return JSON.parse(req.rawBody);
  } catch {
    throw new BodyParseError('request body is not valid JSON');
  }
}

export function bearerToken(req: SimRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : undefined;
}
