import type { PolicyRequests } from '../policy/requests';
import { randomUUID } from 'node:crypto';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import express, { type Express, type Request, type Response } from 'express';
import type { Config } from '../config';
import type { ApiTokenRepository } from '../db/api-token.repository';
import type { OperationList } from '../db/operation-list';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { Queues } from '../queues/queues';
import type { OperationReads } from '../operations/read-models';
import type { OperationsService } from '../operations/requests';
import { Authenticator, bearerAuth, boardAuth } from './auth';
import { buildOpenApiDocument } from './contract';
import { createOperationListRouter } from './operation-list.routes';
import { createFindingsRouter } from './findings.routes';
import type { OwnershipFindingRepository } from '../db/ownership-finding.repository';
import { HttpProblem, problemErrorHandler, requestLogger } from './problem';
import { metricsHandler, readyzHandler, type Readiness } from './probes';
import { registerQueueMetrics } from './queue-metrics';
import { servePublic } from './routing';
import type { CostService } from '../cost/cost.service';
import { createCostRouter } from './cost.routes';
import { createReconcileRouter, registerReconcileMetrics, type ReconcileRouterDeps } from './reconcile.routes';
import { createTokensRouter } from './tokens.routes';
import { createPoolsRouter } from './pools.routes';
import type { PoolsService } from '../pools/pools.service';
import { createEventsRouter } from './events.routes';
import { createWebhooksRouter, type WebhooksRouterDeps } from './webhooks.routes';
import type { ConcurrencyLimit } from '../events/concurrency-limit';
import type { EventStream } from '../events/event-stream';
import type { OperationWaiter } from '../events/operation-waiter';
import { JSON_BODY_LIMIT, v1Router } from './v1.routes';
import { CONSOLE_PATH, createConsoleRouter, type ConsoleDeps } from '../console/router';

export interface AppDeps {
  /** `metrics` omitted: /metrics is open, on this app. */
  config: Pick<Config, 'http'> & Partial<Pick<Config, 'metrics'>>;
  operations: OperationsService;
  /** What the API reads: agents, events, operations with their queue jobs. */
  reads: OperationReads;
  /** An agent's reports, leases and expiry (src/policy). */
  policy: PolicyRequests;
  /** Named API tokens: looked up on every request, managed through /v1/tokens. */
  tokens: Pick<ApiTokenRepository, 'create' | 'list' | 'revoke' | 'findByHash' | 'touch'>;
  /** GET /v1/operations. */
  operationList: Pick<OperationList, 'list'>;
  /** GET /v1/findings, POST /v1/findings/:id/resolve. */
  findings: Pick<OwnershipFindingRepository, 'list' | 'resolve'>;
  metrics: Metrics;
  logger: Logger;
  queues: Queues;
  /** Whether PostgreSQL and Redis answer right now; the composition root knows how to ask. */
  readiness: () => Promise<Readiness>;
  /** Longest a scrape waits for one queue's job counts (default 2000 ms). */
  redisTimeoutMs?: number;
  /**
   * Long polls on GET /v1/operations/:id?wait and GET /v1/events/stream, each under its cap of open
   * requests (omitted: wait answers at once, no stream).
   */
  events?: {
    waiter: Pick<OperationWaiter, 'wait'>;
    stream: Pick<EventStream, 'open'>;
    limits: { streams: ConcurrencyLimit; longPolls: ConcurrencyLimit };
  };
  /** /v1/webhooks (omitted: not served). */
  webhooks?: WebhooksRouterDeps;
  /** Agent costs and GET /v1/fleet/cost; omitted, neither is served. */
  cost?: CostService;
  /** GET/POST /v1/reconcile and the reconcile gauges; omitted, neither is served. */
  reconcile?: ReconcileRouterDeps['reconciler'];
  /** /v1/pools and claims. */
  pools: PoolsService;
  /** The web console at /console (its session length, the request budget it shows). */
  console?: Pick<ConsoleDeps, 'sessionTtlMs' | 'requestBudget'>;
}

export const BOARD_BASE_PATH = '/admin/queues';
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
// Probes and scrapes arrive every few seconds; logging each at info would drown the real traffic.
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** The route template for metrics labels: never the raw path, which would explode label cardinality. */
function routeLabel(req: Request, res: Response): string {
  const template = res.locals.routeTemplate as string | undefined;
  if (template) return template;
  if (req.path === BOARD_BASE_PATH || req.path.startsWith(`${BOARD_BASE_PATH}/`)) return BOARD_BASE_PATH;
  return 'unmatched';
}

export function createApp(deps: AppDeps): Express {
  const { http } = deps.config;
  const auth = new Authenticator({ bootstrapToken: http.apiToken, tokens: deps.tokens, logger: deps.logger });
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');

  // Request id, access log and the request counter, for every request. Nothing here is built that
  // the request may not need: the log line only when its level is on, a logger for the request only
  // when something logs (see requestLogger).
  app.use((req, res, next) => {
    const incoming = req.headers['x-request-id'];
    const requestId = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    const started = performance.now();
    res.locals.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);
    res.on('finish', () => {
      const route = routeLabel(req, res);
      const durationMs = performance.now() - started;
      const labels = { method: req.method, route, status: String(res.statusCode) };
      deps.metrics.httpRequests.inc(labels);
      deps.metrics.httpRequestDuration.observe(labels, durationMs / 1000);
      const level = QUIET_ROUTES.has(route) ? 'debug' : 'info';
      if (!deps.logger.isLevelEnabled(level)) return;
      const entry = { method: req.method, route, path: req.originalUrl.split('?')[0], status: res.statusCode, durationMs };
      requestLogger(deps.logger, res)[level](entry, 'request');
    });
    next();
  });

  // The contract of the API is public, like the API's existence; everything else under /v1 needs a
  // token, and each route the scope it names (see v1.routes.ts).
  const document = buildOpenApiDocument({ reconcile: deps.reconcile !== undefined, cost: deps.cost !== undefined });
  servePublic(app, {
    getOpenApiDocument: (_req, res) => {
      res.json(document);
    },
  });
  const extra = [
    createTokensRouter({ tokens: deps.tokens }),
    createOperationListRouter({ operationList: deps.operationList }),
    createFindingsRouter({ findings: deps.findings }),
    createPoolsRouter({
      pools: deps.pools,
      waiter: deps.events?.waiter,
      waitLimit: deps.events?.limits.longPolls,
      readOperation: async (id) => (await deps.reads.getOperation(id)).operation,
      readAgent: async (id) => (await deps.reads.getAgent(id)).agent,
    }),
    ...(deps.reconcile ? [createReconcileRouter({ reconciler: deps.reconcile })] : []),
    ...(deps.events ? [createEventsRouter({ stream: deps.events.stream, limit: deps.events.limits.streams })] : []),
    ...(deps.webhooks ? [createWebhooksRouter(deps.webhooks)] : []),
    ...(deps.cost ? [createCostRouter({ cost: deps.cost })] : []),
  ];
  const authenticate = bearerAuth(auth);
  const v1 = v1Router(deps.operations, deps.reads, extra, { policy: deps.policy, waiter: deps.events?.waiter, waitLimit: deps.events?.limits.longPolls, cost: deps.cost });
  // The token check and the routes as one layer of the app. A refusal goes straight on to the problem
  // handler: it is answered at once, before a malformed body the parser is still reading can close
  // the connection (an error leaving a router waits a turn of the event loop).
  app.use('/v1', (req, res, next) => authenticate(req, res, (err?: unknown) => (err === undefined ? v1(req, res, next) : next(err))));

  // Probes, metrics and the board after /v1, which carries the traffic and so is matched first.
  servePublic(app, {
    liveness: (_req, res) => {
      res.json({ status: 'ok' });
    },
    readiness: readyzHandler(deps.readiness, auth),
  });

  registerQueueMetrics(deps.metrics.registry, deps.queues, deps.logger, deps.redisTimeoutMs);
  if (deps.reconcile) registerReconcileMetrics(deps.metrics.registry, deps.reconcile, deps.logger);
  // With METRICS_PORT set, /metrics is served on that listener only (see createMetricsApp).
  if (!deps.config.metrics?.listen) {
    servePublic(app, { metrics: metricsHandler(deps.metrics, deps.config.metrics?.token ?? null) });
  }

  const board = new ExpressAdapter();
  board.setBasePath(BOARD_BASE_PATH);
  createBullBoard({
    queues: Object.values(deps.queues).map((queue) => new BullMQAdapter(queue)),
    serverAdapter: board,
    options: { uiConfig: { boardTitle: 'tailfleet' } },
  });
  // Queue surgery (retry, clean, empty) is an admin's job: the board's own login or an admin token.
  // The adapter mounts an Express app of its own, which would announce itself in X-Powered-By.
  const boardApp = board.getRouter() as Express;
  boardApp.disable('x-powered-by');
  app.use(BOARD_BASE_PATH, boardAuth({ login: http.board, auth }), boardApp);

  app.use(CONSOLE_PATH, createConsoleRouter({ auth, secret: http.apiToken, ...deps.console }));

  app.use((req, _res, next) => {
    next(new HttpProblem('route-not-found', `No route for ${req.method} ${req.path}.`));
  });
  app.use(problemErrorHandler({ logger: deps.logger, bodyLimit: JSON_BODY_LIMIT }));
  return app;
}
