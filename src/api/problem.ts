import type { NextFunction, Request, Response } from 'express';
import { ZodError } from 'zod';
import type { Logger } from '../lib/logger';
import { isDatabaseUnavailable } from '../operations/errors';
import { AgentNameTakenError, AgentQuotaExceededError, InvalidCursorError, LifetimeExceededError, NameTakenError, NotFoundError, StateConflictError, TailfleetError } from '../errors';
import { IdempotencyKeyReuseError, ServerSpecRejectedError } from '../operations/requests';

/**
 * RFC 9457 problem details. Every 4xx/5xx the API sends has this one shape, so a client can branch
 * on `type` and show `detail`; `errors` lists every invalid field at once.
 */
export interface FieldProblem {
  path: string;
  message: string;
}

export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  requestId?: string;
  errors?: FieldProblem[];
  [extension: string]: unknown;
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

const TYPE_PREFIX = 'urn:tailfleet:problem:';

/** Problem kinds with their fixed status and title; `type` is `urn:tailfleet:problem:<kind>`. */
export const PROBLEM_KINDS = {
  'validation-error': { status: 400, title: 'Invalid request' },
  'invalid-json': { status: 400, title: 'Malformed JSON body' },
  unauthorized: { status: 401, title: 'Authentication required' },
  forbidden: { status: 403, title: 'Token scope does not allow this' },
  'not-found': { status: 404, title: 'Resource not found' },
  'route-not-found': { status: 404, title: 'No such route' },
  'method-not-allowed': { status: 405, title: 'Method not allowed' },
  'state-conflict': { status: 409, title: 'State does not allow this operation' },
  'name-taken': { status: 409, title: 'Name already in use' },
  'name-reserved': { status: 422, title: 'Name reserved' },
  'quota-exceeded': { status: 409, title: 'Quota exceeded' },
  'payload-too-large': { status: 413, title: 'Request body too large' },
  'unsupported-media-type': { status: 415, title: 'Unsupported media type' },
  'idempotency-key-reused': { status: 422, title: 'Idempotency key already used for a different request' },
  'unavailable-server-spec': { status: 422, title: 'The cloud does not offer this server' },
  'lifetime-exceeded': { status: 422, title: "Beyond the fleet's maximum agent lifetime" },
  'too-many-requests': { status: 429, title: 'Too many open requests' },
  'internal-error': { status: 500, title: 'Internal server error' },
  'service-unavailable': { status: 503, title: 'Service temporarily unavailable' },
} as const;

export type ProblemKind = keyof typeof PROBLEM_KINDS;

export function problemType(kind: ProblemKind): string {
  return `${TYPE_PREFIX}${kind}`;
}

/** An error that already knows its HTTP answer; thrown by handlers and middleware in src/api. */
export class HttpProblem extends TailfleetError {
  readonly status: number;
  /** The problem's kind: what a client branches on. */
  readonly code: ProblemKind;
  /** Asking again unchanged cannot help, except after a 429 or a 5xx. */
  readonly permanent: boolean;
  constructor(
    readonly kind: ProblemKind,
    readonly detail: string,
    readonly extra: { errors?: FieldProblem[]; headers?: Record<string, string>; [k: string]: unknown } = {},
  ) {
    super(detail);
    this.name = 'HttpProblem';
    this.status = PROBLEM_KINDS[kind].status;
    this.code = kind;
    this.permanent = this.status < 500 && this.status !== 429;
  }
}

export function zodProblems(err: ZodError, root?: string): FieldProblem[] {
  return err.issues.map((issue) => {
    const segments = [...(root ? [root] : []), ...issue.path.map(String)];
    return { path: segments.join('.') || '(root)', message: issue.message };
  });
}

interface BodyParserError {
  type?: string;
  status?: number;
  expose?: boolean;
}

function bodyParserProblem(err: BodyParserError, limit: string): HttpProblem | undefined {
  switch (err.type) {
    case 'entity.parse.failed':
      return new HttpProblem('invalid-json', 'The request body is not valid JSON.');
    case 'entity.too.large':
      return new HttpProblem('payload-too-large', `The request body exceeds the limit of ${limit}.`);
    case 'charset.unsupported':
    case 'encoding.unsupported':
      return new HttpProblem('unsupported-media-type', 'The request body uses an unsupported charset or content encoding.');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return new HttpProblem('invalid-json', 'The request body could not be read.');
    default:
      return undefined;
  }
}

/** Maps anything thrown in a request to a problem. Unknown errors become an opaque 500. */
export function toProblem(err: unknown, bodyLimit: string): HttpProblem {
  if (err instanceof HttpProblem) return err;
  if (err instanceof ZodError) {
    return new HttpProblem('validation-error', 'The request has invalid fields.', { errors: zodProblems(err) });
  }
  if (err instanceof NotFoundError) return new HttpProblem('not-found', err.message);
  if (err instanceof AgentNameTakenError) {
    return new HttpProblem('name-taken', err.message, err.existingAgentId ? { agentId: err.existingAgentId } : {});
  }
  if (err instanceof NameTakenError) return new HttpProblem('name-taken', err.message);
  if (err instanceof AgentQuotaExceededError) return new HttpProblem('quota-exceeded', err.message, { limit: err.limit });
  if (err instanceof ServerSpecRejectedError) {
    return new HttpProblem('unavailable-server-spec', err.message, {
      errors: err.problems.map((p) => ({ path: `body.${p.field}`, message: p.message })),
    });
  }

  // Also a guarded write that lost to a concurrent request: the state moved under us.
  if (err instanceof StateConflictError) return new HttpProblem('state-conflict', err.message);
  if (err instanceof LifetimeExceededError) return new HttpProblem('lifetime-exceeded', err.message, { latest: err.latest.toISOString() });
  if (err instanceof InvalidCursorError) {
    return new HttpProblem('validation-error', 'The request has invalid fields.', {
      errors: [{ path: 'query.cursor', message: err.message }],
    });
  }
  if (err instanceof IdempotencyKeyReuseError) return new HttpProblem('idempotency-key-reused', err.message);
  const parsed = err && typeof err === 'object' ? bodyParserProblem(err as BodyParserError, bodyLimit) : undefined;
  if (parsed) return parsed;
  // The router cannot decode a path parameter such as `%zz` or `%C0%AE`: the client's mistake.
  if (err instanceof URIError && (err as BodyParserError).status === 400) {
    return new HttpProblem('validation-error', 'The request has invalid fields.', {
      errors: [{ path: 'params', message: 'must be valid percent-encoded UTF-8' }],
    });
  }
  // body-parser answers a body that does not decompress (bad gzip/deflate/br data) with a bare 400.
  if ((err as BodyParserError | null)?.status === 400 && (err as BodyParserError).expose === true) {
    return new HttpProblem('invalid-json', 'The request body could not be read.');
  }
  if (isDatabaseUnavailable(err)) {
    return new HttpProblem('service-unavailable', 'The database is unavailable. Retry later.', {
      headers: { 'Retry-After': '5' },
    });
  }
  return new HttpProblem('internal-error', 'An unexpected error occurred.');
}

export function sendProblem(req: Request, res: Response, problem: HttpProblem): void {
  const { errors, headers, ...extensions } = problem.extra;
  const body: ProblemDetails = {
    ...extensions,
    type: problemType(problem.kind),
    title: PROBLEM_KINDS[problem.kind].title,
    status: problem.status,
    detail: problem.detail,
    instance: req.originalUrl.split('?')[0],
    requestId: res.locals.requestId as string | undefined,
    ...(errors && errors.length > 0 ? { errors } : {}),
  };
  for (const [name, value] of Object.entries(headers ?? {})) res.setHeader(name, value);
  res.status(problem.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body));
}

/**
 * The logger for what a request logs, bound to its request id (`reqId`); made on first use and kept
 * in res.locals.logger, so a request that logs nothing does not pay for a child logger.
 */
export function requestLogger(base: Logger, res: Response): Logger {
  const locals = res.locals as { logger?: Logger; requestId?: string };
  locals.logger ??= locals.requestId === undefined ? base : base.child({ reqId: locals.requestId });
  return locals.logger;
}

/** The last middleware: turns every error into a problem and logs server-side failures with the cause. */
export function problemErrorHandler(opts: { logger: Logger; bodyLimit: string }) {
  return (err: unknown, req: Request, res: Response, next: NextFunction): void => {
    const problem = toProblem(err, opts.bodyLimit);
    if (problem.status >= 500) requestLogger(opts.logger, res).error({ err }, `Request failed: ${problem.detail}`);
    if (res.headersSent) {
      next(err);
      return;
    }
    sendProblem(req, res, problem);
  };
}

/**
 * Node's HTTP parser rejects some requests (malformed request line, duplicate Content-Length,
 * oversized headers) before Express sees them, and by default answers with an empty body. Answer
 * those with a problem document too, so every client gets the same error shape.
 */
export function answerClientError(err: NodeJS.ErrnoException & { bytesParsed?: number }, socket: import('node:stream').Duplex): void {
  if (!socket.writable || (socket as { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? 431 : 400;
  const body = JSON.stringify({
    type: problemType('validation-error'),
    title: tooLarge ? 'Request headers too large' : 'Malformed HTTP request',
    status,
    detail: tooLarge ? 'The request headers exceed the size this server accepts.' : 'The request could not be parsed as HTTP/1.1.',
  });
  socket.end(
    `HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
      `Content-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
