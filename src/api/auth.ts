import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { SYSTEM_ACTOR, type ApiToken, type TokenScope } from '../entities';
import type { Logger } from '../lib/logger';
import { HttpProblem } from './problem';
import { hashToken, TOKEN_PATTERN } from '../lib/tokens';

/**
 * Who may call the API. A request carries one token: the deployment's API_TOKEN (the bootstrap
 * admin, for creating the first named tokens) or a named token made by POST /v1/tokens, stored as
 * its SHA-256 only. Scopes nest: read ⊂ operate ⊂ admin.
 */

export interface Principal {
  /** Token name; `bootstrap` for API_TOKEN. What actorOf() returns. */
  name: string;
  scope: TokenScope;
  /** Row id of a named token; null for the bootstrap token, which has no row. */
  tokenId: string | null;
  /** For an `agent`-scoped token: the one agent it may report for. */
  agentId?: string | null;
}

export const BOOTSTRAP_TOKEN_NAME = 'bootstrap';

/**
 * Names a named token may not take, in any case: the actors tailfleet writes itself (`system` for
 * workers, the reconciler, sweeps and policies; `bootstrap` for API_TOKEN), so the audit never shows
 * a token's work as tailfleet's own.
 */
export const RESERVED_TOKEN_NAMES: readonly string[] = [SYSTEM_ACTOR, BOOTSTRAP_TOKEN_NAME];

export function isReservedTokenName(name: string): boolean {
  return RESERVED_TOKEN_NAMES.includes(name.toLowerCase());
}

// An agent's own credential ranks below read: it opens nothing but the routes that need `agent`.
const SCOPE_RANK: Record<TokenScope, number> = { agent: -1, read: 0, operate: 1, admin: 2 };

/**
 * Whether a principal of scope `have` may call a route that needs `need`. A route that needs `agent`
 * (an agent reporting its own activity) takes that agent's credential — the handler checks that it
 * is the agent of the path (agentMayReport) — or an operator's token (operate and up).
 */
export function scopeAllows(have: TokenScope, need: TokenScope): boolean {
  if (need === 'agent') return have === 'agent' || SCOPE_RANK[have] >= SCOPE_RANK.operate;
  return SCOPE_RANK[have] >= SCOPE_RANK[need];
}

/**
 * Refuses (403) an agent's credential used for another agent than its own. Operator tokens that
 * reached the handler (scopeAllows) may report for any agent.
 */
export function agentMayReport(res: Response, agentId: string): void {
  const principal = principalOf(res);
  if (!principal) throw new Error('agentMayReport() called on a request that was not authenticated');
  if (principal.scope === 'agent' && principal.agentId !== agentId) {
    throw new HttpProblem('forbidden', `The token "${principal.name}" reports for another agent; an agent's credential is good for its own agent only.`, {
      requiredScope: 'agent',
      tokenScope: principal.scope,
    });
  }
}

// Made and hashed in src/lib/tokens.ts (a provision makes an agent's credential with the same code).
export { generateToken, hashToken, TOKEN_PATTERN } from '../lib/tokens';

// A use is recorded at most once a minute per token: last_used_at is for spotting unused tokens.
const TOUCH_INTERVAL_MS = 60_000;

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

// Hashing first makes the comparison constant-time in the length of the secret as well.
function sameSecret(given: string, expectedDigest: Buffer): boolean {
  return timingSafeEqual(digest(given), expectedDigest);
}

export interface TokenLookup {
  findByHash(tokenHash: string): Promise<ApiToken | null>;
  touch(id: string, at: Date): Promise<void>;
}

export interface AuthenticatorDeps {
  /** API_TOKEN: always an admin, named `bootstrap`. */
  bootstrapToken: string;
  tokens: TokenLookup;
  logger: Logger;
  now?: () => Date;
}

/**
 * Resolves a presented secret to a principal. Named tokens are looked up by hash on every request
 * (one indexed read), never cached, so a revocation applies to the very next request in every
 * process.
 */
export class Authenticator {
  private readonly bootstrap: Buffer;
  private readonly tokens: TokenLookup;
  private readonly logger: Logger;
  private readonly now: () => Date;

  constructor(deps: AuthenticatorDeps) {
    this.bootstrap = digest(deps.bootstrapToken);
    this.tokens = deps.tokens;
    this.logger = deps.logger;
    this.now = deps.now ?? (() => new Date());
  }

  /** The bootstrap token's principal when `secret` is API_TOKEN: known without a database round trip. */
  bootstrapPrincipal(secret: string): Principal | null {
    return sameSecret(secret, this.bootstrap) ? { name: BOOTSTRAP_TOKEN_NAME, scope: 'admin', tokenId: null } : null;
  }

  async authenticate(secret: string): Promise<Principal | null> {
    return this.bootstrapPrincipal(secret) ?? this.namedPrincipal(secret);
  }

  /** A named token's principal (looked up by its hash); null when unknown, revoked or expired. */
  async namedPrincipal(secret: string): Promise<Principal | null> {
    // Anything that cannot be a named token is refused without a database round trip.
    if (!TOKEN_PATTERN.test(secret)) return null;
    const row = await this.tokens.findByHash(hashToken(secret));
    const now = this.now();
    if (!row || row.revokedAt !== null || (row.expiresAt !== null && row.expiresAt.getTime() <= now.getTime())) return null;
    if (row.lastUsedAt === null || now.getTime() - row.lastUsedAt.getTime() >= TOUCH_INTERVAL_MS) {
      // Bookkeeping only: the request does not wait for it, and a failure does not fail the request.
      this.tokens.touch(row.id, now).catch((err: unknown) => this.logger.warn({ err, tokenId: row.id }, 'Could not record a token use'));
    }
    return { name: row.name, scope: row.scope, tokenId: row.id, agentId: row.agentId };
  }
}

/** The authenticated principal of a request; undefined before (or without) authentication. */
export function principalOf(res: Response): Principal | undefined {
  return res.locals.principal as Principal | undefined;
}

/**
 * The actor a principal's work is recorded under: `token:<name>#<id>` for a named token (a revoked
 * token's name can be taken again, its id never is), `bootstrap` for API_TOKEN.
 */
export function actorName(principal: Principal): string {
  return principal.tokenId === null ? principal.name : `token:${principal.name}#${principal.tokenId}`;
}

/**
 * Who made this request, for recording who asked for an operation (see actorName). Only valid
 * behind bearerAuth (every /v1 route except the OpenAPI document); throws elsewhere, because
 * recording an unauthenticated actor would be a bug.
 */
export function actorOf(res: Response): string {
  const principal = principalOf(res);
  if (!principal) throw new Error('actorOf() called on a request that was not authenticated');
  return actorName(principal);
}

const BEARER = /^Bearer[ ]+(\S+)\s*$/i;
const BASIC = /^Basic[ ]+([A-Za-z0-9+/=]+)\s*$/i;

/** The secret of `Authorization: Bearer <secret>`, if the request carries one. */
export function bearerSecret(req: Request): string | undefined {
  return BEARER.exec(req.get('authorization') ?? '')?.[1];
}

/** `Authorization: Bearer <token>` for the /v1 API; sets res.locals.principal. */
export function bearerAuth(auth: Authenticator): RequestHandler {
  const admit = (principal: Principal | null, res: Response, next: NextFunction): void => {
    if (!principal) {
      next(
        new HttpProblem('unauthorized', 'The bearer token is not valid (unknown, revoked or expired).', {
          headers: { 'WWW-Authenticate': 'Bearer realm="tailfleet", error="invalid_token"' },
        }),
      );
      return;
    }
    res.locals.principal = principal;
    next();
  };
  return (req: Request, res: Response, next: NextFunction) => {
    const secret = bearerSecret(req);
    if (!secret) {
      next(
        new HttpProblem('unauthorized', 'Send an API token as "Authorization: Bearer <token>".', {
          headers: { 'WWW-Authenticate': 'Bearer realm="tailfleet"' },
        }),
      );
      return;
    }
    // API_TOKEN is answered at once; a named token is looked up.
    const bootstrap = auth.bootstrapPrincipal(secret);
    if (bootstrap) return admit(bootstrap, res, next);
    return auth.namedPrincipal(secret).then((principal) => admit(principal, res, next));
  };
}

function insufficientScope(principal: Principal, need: TokenScope, realm: 'Bearer' | 'Basic' = 'Bearer'): HttpProblem {
  return new HttpProblem('forbidden', `The token "${principal.name}" has scope ${principal.scope}; this needs ${need}.`, {
    requiredScope: need,
    tokenScope: principal.scope,
    // RFC 6750 §3.1; Basic has no way to say "these credentials are not enough".
    ...(realm === 'Bearer' ? { headers: { 'WWW-Authenticate': `Bearer realm="tailfleet", error="insufficient_scope", scope="${need}"` } } : {}),
  });
}

/** Why the request's principal may not use a route that needs `need` (403), or undefined when it may. */
export function scopeRefusal(res: Response, need: TokenScope): Error | undefined {
  const principal = principalOf(res);
  if (!principal) return new Error('a scoped route is served only behind bearerAuth');
  return scopeAllows(principal.scope, need) ? undefined : insufficientScope(principal, need);
}

export interface BoardAuthOptions {
  /** BULL_BOARD_USER / BULL_BOARD_PASSWORD; null turns the board's own login off. */
  login: { user: string; password: string } | null;
  auth: Authenticator;
}

/**
 * Bull Board: HTTP Basic with its own login (so a browser shows its prompt), or an admin token —
 * as a Bearer token, or as the Basic password with any user name.
 */
export function boardAuth(opts: BoardAuthOptions): RequestHandler {
  const login = opts.login ? { user: digest(opts.login.user), password: digest(opts.login.password) } : null;
  const challenge = { 'WWW-Authenticate': 'Basic realm="tailfleet", charset="UTF-8"' };
  return async (req: Request, res: Response, next: NextFunction) => {
    const header = req.get('authorization') ?? '';
    let secret: string | undefined;
    const bearer = BEARER.exec(header);
    if (bearer) secret = bearer[1]!;
    const basic = BASIC.exec(header);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon >= 0) {
        const user = decoded.slice(0, colon);
        const password = decoded.slice(colon + 1);
        if (login) {
          // Both comparisons always run, so the timing does not tell which half was wrong.
          const userOk = sameSecret(user, login.user);
          const passwordOk = sameSecret(password, login.password);
          if (userOk && passwordOk) {
            res.locals.principal = { name: `board:${user}`, scope: 'admin', tokenId: null } satisfies Principal;
            next();
            return;
          }
        }
        secret = password;
      }
    }
    const principal = secret ? await opts.auth.authenticate(secret) : null;
    if (!principal) {
      const how = login ? 'the board user name and password, or an admin API token' : 'an admin API token (Bearer, or as the Basic password)';
      next(new HttpProblem('unauthorized', `Bull Board needs ${how}.`, { headers: challenge }));
      return;
    }
    if (!scopeAllows(principal.scope, 'admin')) {
      next(insufficientScope(principal, 'admin', bearer ? 'Bearer' : 'Basic'));
      return;
    }
    res.locals.principal = principal;
    next();
  };
}
