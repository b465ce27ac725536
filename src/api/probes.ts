import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { CredentialStates } from '../clients/observers';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { bearerSecret, scopeAllows, type Authenticator } from './auth';
import { servePublic } from './routing';
import { HttpProblem, problemErrorHandler } from './problem';

/**
 * /readyz and /metrics: what load balancers, orchestrators and Prometheus ask, served by the API's
 * app, by a worker's probe app and (METRICS_PORT) by a listener of its own. Anonymous callers learn
 * whether the process is ready and which dependency is down, never a setting, host or URL.
 */

export interface Readiness {
  postgres: boolean;
  redis: boolean;
  /** Whether the clouds accept our credentials (worker roles; an API-only process makes no cloud calls). */
  credentials?: CredentialStates;
  /** What an operator has to fix, e.g. "hetzner rejected the credentials (401): check HETZNER_API_TOKEN". */
  problems?: string[];
}

/** The generic names /readyz gives a dependency that is down. */
export type Dependency = 'database' | 'redis' | 'hetzner' | 'tailscale';

const READINESS_TIMEOUT_MS = 3000;

function withTimeout<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  return Promise.race([promise.catch(() => fallback), timeout]).finally(() => clearTimeout(timer));
}

/** The dependencies that keep the process from being ready, by generic name. */
export function downDependencies(state: Readiness): Dependency[] {
  const down: Dependency[] = [];
  if (!state.postgres) down.push('database');
  if (!state.redis) down.push('redis');
  for (const [api, credential] of Object.entries(state.credentials ?? {})) {
    if (credential === 'unauthorized') down.push(api as Dependency);
  }
  return down;
}

/**
 * GET /readyz: 200 while PostgreSQL and Redis answer and no cloud has refused our credentials.
 * A refused credential is a configuration error: jobs fail at once until an operator fixes it, so
 * the process says it is not ready (liveness, /healthz, stays ok: restarting would not help).
 * With an admin token the answer also says what to fix (which settings), for an operator.
 */
export function readyzHandler(readiness: () => Promise<Readiness>, auth?: Pick<Authenticator, 'authenticate'>): RequestHandler {
  return async (req: Request, res: Response) => {
    const state = await withTimeout(readiness(), READINESS_TIMEOUT_MS, { postgres: false, redis: false });
    const down = downDependencies(state);
    const ready = down.length === 0;
    // A probe is never refused: a missing, wrong or lesser token only means the short answer.
    const secret = bearerSecret(req);
    const principal = secret && auth ? await auth.authenticate(secret).catch(() => null) : null;
    const details =
      principal && scopeAllows(principal.scope, 'admin')
        ? {
            postgres: state.postgres,
            redis: state.redis,
            ...(state.credentials ? { credentials: state.credentials } : {}),
            ...(state.problems?.length ? { problems: state.problems } : {}),
          }
        : {};
    res.setHeader('Cache-Control', 'no-store');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', ...(ready ? {} : { down }), ...details });
  };
}

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/**
 * GET /metrics in Prometheus' text format; with METRICS_TOKEN set, only for `Authorization: Bearer
 * <METRICS_TOKEN>` (Prometheus' `authorization.credentials` / `bearer_token_file`).
 */
export function metricsHandler(metrics: Pick<Metrics, 'registry'>, token: string | null): RequestHandler {
  const expected = token === null ? null : digest(token);
  return async (req: Request, res: Response, next: NextFunction) => {
    if (expected) {
      const given = bearerSecret(req);
      // Hashing first makes the comparison constant-time in the length of the secret as well.
      if (!given || !timingSafeEqual(digest(given), expected)) {
        next(
          new HttpProblem('unauthorized', 'Send METRICS_TOKEN as "Authorization: Bearer <token>".', {
            headers: { 'WWW-Authenticate': `Bearer realm="tailfleet-metrics"${given ? ', error="invalid_token"' : ''}` },
          }),
        );
        return;
      }
    }
    try {
      const body = await metrics.registry.metrics();
      res.type(metrics.registry.contentType).send(body);
    } catch (err) {
      next(err);
    }
  };
}

/** The METRICS_PORT listener's app: /metrics and nothing else. */
export function createMetricsApp(deps: { metrics: Pick<Metrics, 'registry'>; token: string | null; logger: Logger }): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  servePublic(app, { metrics: metricsHandler(deps.metrics, deps.token) });
  app.use((req, _res, next) => {
    next(new HttpProblem('route-not-found', `No route for ${req.method} ${req.path}; this listener serves GET /metrics.`));
  });
  app.use(problemErrorHandler({ logger: deps.logger, bodyLimit: '0b' }));
  return app;
}
