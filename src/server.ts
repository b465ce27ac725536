import 'reflect-metadata';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import express, { type Application } from 'express';
import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { createApp } from './api/app';
import { Authenticator } from './api/auth';
import { createMetricsApp, metricsHandler, readyzHandler, type Readiness } from './api/probes';
import { HetznerClient, type HetznerClientDeps } from './clients/hetzner/hetzner.client';
import { TailscaleClient, type TailscaleClientDeps } from './clients/tailscale/tailscale.client';
import type { Config } from './config';
import { ApiTokenRepository, createDataSource, createRepositories, runMigrations, warmAgentCommands, type Repositories } from './db';
import { OperationList } from './db/operation-list';
import { CostService } from './cost/cost.service';
import { PriceList, type PriceSource } from './cost/prices';
import { Fleet } from './fleet/fleet';
import { CloudCredentialHealth, observeAll } from './lib/cloud-health';
import { createLogger, type Logger } from './lib/logger';
import { createMetrics, type Metrics } from './lib/metrics';
import { createProcessors } from './processors';
import { createReconcileProcessor, createReconcileWorker, ensureReconcileSchedule, scheduleReconcile } from './processors/reconcile.processor';
import { OperationLedger } from './operations/ledger';
import { Outbox } from './operations/outbox';
import { OutboxRelay } from './operations/relay';
import {
  closeQueues,
  createProducerConnection,
  createQueues,
  createWorkerConnection,
  type Queues,
} from './queues/queues';
import { CloudCatalogue } from './services/catalogue';
import { OperationsService } from './services/operations.service';
import { EventNotifications } from './events/notifications';
import { ConcurrencyLimit } from './events/concurrency-limit';
import { EventStream } from './events/event-stream';
import { OperationWaiter } from './events/operation-waiter';
import { eventView } from './api/views';
import { WebhookRepository } from './webhooks/webhook.repository';
import { createWebhookProcessor, createWebhookWorker } from './webhooks/delivery.processor';
import { WebhookRelay } from './webhooks/delivery-relay';
import { WebhookSecretBox } from './webhooks/secret-box';
import { webhookJobOptions } from './queues/queues';
import { ReconcileReports, Reconciler, stuckTimeouts } from './reconcile';
import { RollbackListener, provisionFailureHook } from './services/rollback-listener';
import { answerClientError, HttpProblem, problemErrorHandler } from './api/problem';
import { DEFAULT_WORKER_SETTINGS, createWorkers, type WorkerPool, type WorkerSettings } from './workers';
import { HibernateWorkflow, PowerWorkflow, ProvisionWorkflow, TeardownWorkflow, type WorkflowDeps } from './workflows';

/**
 * The composition root: the only place that builds infrastructure. Order follows the data flow —
 * config → logger → DataSource → Redis → repositories → clients → services → queues → app/workers —
 * and shutdown walks it backwards.
 */

/** Connections an API process opens and warms at start: enough for a burst of several hundred requests a second. */
const API_WARM_CONNECTIONS = 10;

export interface TailfleetOverrides {
  logger?: Logger;
  metrics?: Metrics;
  /** Extra client options (e.g. short retry delays in tests); the config supplies the rest. */
  hetzner?: Partial<HetznerClientDeps>;
  tailscale?: Partial<TailscaleClientDeps>;
  worker?: Partial<WorkerSettings>;
  /** Run the failed-provision hook and sweep in worker processes (default true). */
  rollbackListener?: boolean;
  /** Apply pending migrations at start (default true). */
  migrate?: boolean;
}

export interface Tailfleet {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  dataSource: DataSource;
  queues: Queues;
  repositories: Repositories;
  /** The operation ledger: every status change of an operation. */
  ledger: OperationLedger;
  /** Delivers accepted operations to their queues. */
  outbox: Outbox;
  operations: OperationsService;
  /** The HTTP app: the API (roles all and api) or only probes and metrics (role worker). */
  app?: Application;
  /** Worker roles only: the workflows the processors call. */
  workflows?: { provision: ProvisionWorkflow; power: PowerWorkflow; teardown: TeardownWorkflow; hibernation: HibernateWorkflow };
  workers?: WorkerPool;
  rollbackListener?: RollbackListener;
  /** Worker roles only: re-delivers accepted operations whose job Redis does not hold. */
  relay?: OutboxRelay;
  /** Worker roles only: drift reconciler and orphan sweeper, run by the reconcile queue's worker. */
  reconciler?: Reconciler;
  /** The process's one LISTEN connection: every event row written, by any process, at commit. */
  notifications: EventNotifications;
  /** API roles only: long polls on operations and the SSE event stream. */
  waiter?: OperationWaiter;
  eventStream?: EventStream;
  /** API roles only: the caps on open event streams and long polls. */
  requestLimits?: { streams: ConcurrencyLimit; longPolls: ConcurrencyLimit };
  webhooks: WebhookRepository;
  /** Worker roles only: hands webhook deliveries written by the events trigger to the webhooks queue. */
  webhookRelay?: WebhookRelay;
  /** Worker roles only: whether the clouds accept the configured credentials (shown on /readyz). */
  cloudHealth?: CloudCredentialHealth;
  /** Set once start() has the HTTP server listening, e.g. http://127.0.0.1:3000. */
  url?: string;
  /** With METRICS_PORT: the metrics listener's address once started, e.g. http://127.0.0.1:9464. */
  metricsUrl?: string;
  start(): Promise<void>;
  /** Ordered graceful shutdown; safe to call more than once. */
  stop(): Promise<void>;
}

export function createTailfleet(config: Config, overrides: TailfleetOverrides = {}): Tailfleet {
  const runsApi = config.role === 'all' || config.role === 'api';
  const runsWorkers = config.role === 'all' || config.role === 'worker';

  const logger = overrides.logger ?? createLogger({ level: config.logLevel });
  const metrics = overrides.metrics ?? createMetrics({ defaultMetrics: true });
  // Workers hold a connection per query, not per job, but with every queue busy and the API taking
  // a burst, ten connections queued requests behind jobs (and vice versa); bounded well below
  // PostgreSQL's default max_connections even with several worker processes.
  const poolSize = runsWorkers ? Math.min(30, 10 + config.queues.concurrency) : 10;
  // The API's connections are warmed at start (see warmAgentCommands) and kept, not closed when idle.
  const apiConnections = runsApi ? Math.min(poolSize, API_WARM_CONNECTIONS) : 0;
  const dataSource = createDataSource({
    url: config.databaseUrl,
    applicationName: `tailfleet-${config.role}`,
    poolSize,
    minConnections: apiConnections,
  });

  // Producers fail fast when Redis is down (the API answers 503); workers need a connection that
  // waits through reconnects. Only worker roles open the second one.
  const producer = createProducerConnection(config.redisUrl);
  const workerConnection: Redis | undefined = runsWorkers ? createWorkerConnection(config.redisUrl) : undefined;
  for (const [name, conn] of [['producer', producer], ['worker', workerConnection]] as const) {
    conn?.on('error', (err) => logger.warn({ err: { message: err.message }, connection: name }, 'Redis connection error'));
  }

  const repositories = createRepositories(dataSource);
  const queues = createQueues({
    connection: producer,
    prefix: config.queues.prefix,
    defaults: { attempts: config.queues.attempts, backoffMs: config.queues.backoffMs },
  });
  // A Queue with no 'error' listener makes BullMQ print raw stack dumps to stderr whenever Redis
  // goes away (its console.error fallback); the connection errors above already say it in the log.
  for (const queue of Object.values(queues)) {
    queue.on('error', (err) => logger.debug({ err: { message: err.message }, queue: queue.name }, 'Queue error'));
  }
  const ledger = new OperationLedger({ dataSource, repositories, logger: logger.child({ component: 'ledger' }) });
  const outbox = new Outbox({ queues, connection: producer, logger: logger.child({ component: 'outbox' }) });
  // One Hetzner client per process. Workers change the cloud through it (and readiness reports whether
  // it accepts our credentials); the API only reads through it: the catalogue (server types,
  // locations) that checks a create before it is accepted, and the prices behind agent costs and
  // GET /v1/fleet/cost.
  const cloudHealth = runsWorkers ? new CloudCredentialHealth() : undefined;
  const cloudObserver = cloudHealth ? observeAll(metrics.cloudObserver, cloudHealth) : metrics.cloudObserver;
  const hetzner = new HetznerClient({
    baseUrl: config.hetzner.apiUrl,
    token: config.hetzner.token,
    logger: logger.child({ component: 'hetzner' }),
    observer: cloudObserver,
    actionPollIntervalMs: config.pollIntervalMs,
    serverPollIntervalMs: config.pollIntervalMs,
    actionTimeoutMs: config.hetzner.actionTimeoutSeconds * 1000,
    ...overrides.hetzner,
  });
  const operations = new OperationsService({
    dataSource,
    queues,
    ledger,
    outbox,
    repositories,
    logger: logger.child({ component: 'operations' }),
    defaults: {
      serverType: config.hetzner.serverType,
      image: config.hetzner.image,
      location: config.hetzner.location,
      sshKeys: config.hetzner.sshKeys,
    },
    maxAgents: config.maxAgents,
    // API roles check a create's server type and location against the cloud's catalogue before
    // accepting it (GET /server_types, GET /locations, cached).
    catalogue: runsApi ? new CloudCatalogue({ hetzner, logger: logger.child({ component: 'catalogue' }) }) : undefined,
  });
  // The one final-failure hook: a provision that failed for good is marked so and rolled back
  // (`rollbackListener: false` leaves the rollback to a later sweep).
  ledger.onFinalFailure(provisionFailureHook({ dataSource, operations, rollback: overrides.rollbackListener !== false }));

  const notifications = new EventNotifications({
    connectionString: config.databaseUrl,
    logger: logger.child({ component: 'event-listener' }),
    applicationName: `tailfleet-${config.role}-listener`,
  });
  const webhooks = new WebhookRepository({ dataSource, secrets: new WebhookSecretBox(config.webhooks.secretKeys) });

  const tf: Tailfleet = {
    config,
    logger,
    metrics,
    dataSource,
    queues,
    repositories,
    ledger,
    outbox,
    operations,
    notifications,
    webhooks,
    start,
    stop,
  };
  let reconcileWorker: ReturnType<typeof createReconcileWorker> | undefined;
  let webhookWorker: ReturnType<typeof createWebhookWorker> | undefined;

  if (runsWorkers) {
    tf.cloudHealth = cloudHealth;
    const tailscale = new TailscaleClient({
      baseUrl: config.tailscale.apiUrl,
      clientId: config.tailscale.clientId,
      clientSecret: config.tailscale.clientSecret,
      tailnet: config.tailscale.tailnet,
      tags: config.tailscale.tags,
      logger: logger.child({ component: 'tailscale' }),
      observer: cloudObserver,
      enrollmentPollIntervalMs: config.pollIntervalMs,
      enrollmentTimeoutMs: config.tailscale.enrollmentTimeoutSeconds * 1000,
      ...overrides.tailscale,
    });
    const fleet = new Fleet(config.fleetName);
    const workflowDeps: WorkflowDeps = {
      dataSource,
      repositories,
      hetzner,
      tailscale,
      fleet,
      logger: logger.child({ component: 'workflow' }),
      settings: {
        serverType: config.hetzner.serverType,
        image: config.hetzner.image,
        location: config.hetzner.location,
        sshKeys: config.hetzner.sshKeys,
        shutdownTimeoutMs: config.hetzner.shutdownTimeoutSeconds * 1000,
        enrollmentTimeoutMs: config.tailscale.enrollmentTimeoutSeconds * 1000,
        actionTimeoutMs: config.hetzner.actionTimeoutSeconds * 1000,
      },
    };
    const workflows = {
      provision: new ProvisionWorkflow(workflowDeps),
      power: new PowerWorkflow(workflowDeps),
      teardown: new TeardownWorkflow(workflowDeps),
      hibernation: new HibernateWorkflow(workflowDeps),
    };
    const handledFailures = new Set<string>();
    const processors = createProcessors({
      ledger,
      handledFailures,
      outageRetryMs: config.queues.dbOutageRetryMs,
      ...workflows,
      logger: logger.child({ component: 'processor' }),
      metrics,
      queues,
    });
    const workers = createWorkers({
      connection: workerConnection!,
      prefix: config.queues.prefix,
      concurrency: config.queues.concurrency,
      processors,
      ledger,
      operations: repositories.operations,
      handledFailures,
      logger,
      settings: overrides.worker,
    });
    tf.workflows = workflows;
    tf.workers = workers;
    if (overrides.rollbackListener !== false) {
      const listener = new RollbackListener({
        dataSource,
        operations,
        provisioningJobs: repositories.provisioningJobs,
        logger: logger.child({ component: 'rollback-listener' }),
        sweepIntervalMs: config.queues.rollbackSweepIntervalSeconds * 1000,
      });
      tf.rollbackListener = listener;
    }
    tf.reconciler = new Reconciler({
      dataSource,
      repositories,
      ledger,
      outbox,
      hetzner,
      tailscale,
      queues,
      fleet,
      logger: logger.child({ component: 'reconciler' }),
      metrics,
      ...(config.reconcile.autoHibernateAfterHours !== null
        ? {
            autoHibernate: {
              afterMs: config.reconcile.autoHibernateAfterHours * 3_600_000,
              request: (agentId: string) => operations.requestHibernate(agentId, { requestedBy: 'system' }),
            },
          }
        : {}),
      settings: {
        orphans: config.reconcile.orphans,
        graceSeconds: config.reconcile.graceSeconds,
        tags: config.tailscale.tags,
        stuckAfterMs: stuckTimeouts({
          actionTimeoutMs: config.hetzner.actionTimeoutSeconds * 1000,
          shutdownTimeoutMs: config.hetzner.shutdownTimeoutSeconds * 1000,
          enrollmentTimeoutMs: config.tailscale.enrollmentTimeoutSeconds * 1000,
        }),
      },
    });
    reconcileWorker = createReconcileWorker({
      connection: workerConnection!,
      prefix: config.queues.prefix,
      processor: createReconcileProcessor({
        ledger,
        logger: logger.child({ component: 'processor' }),
        metrics,
        queue: queues.reconcile,
        reconciler: tf.reconciler,
      }),
      logger,
    });
    webhookWorker = createWebhookWorker({
      connection: workerConnection!,
      prefix: config.queues.prefix,
      concurrency: config.queues.concurrency,
      processor: createWebhookProcessor({
        webhooks,
        allowPrivateUrls: config.webhooks.allowPrivateUrls,
        timeoutMs: config.webhooks.timeoutMs,
        logger: logger.child({ component: 'webhooks' }),
      }),
      webhooks,
      logger,
      settings: overrides.worker,
    });
    tf.webhookRelay = new WebhookRelay({
      webhooks,
      queue: queues.webhooks,
      connection: producer,
      jobOptions: webhookJobOptions(config.webhooks),
      logger: logger.child({ component: 'webhook-relay' }),
      intervalMs: config.queues.relayIntervalMs,
    });
    notifications.subscribe(tf.webhookRelay);
    tf.relay = new OutboxRelay({
      dataSource,
      operations: repositories.operations,
      ledger,
      outbox,
      logger: logger.child({ component: 'relay' }),
      intervalMs: config.queues.relayIntervalMs,
      runningGraceMs: overrides.worker?.lockDurationMs ?? DEFAULT_WORKER_SETTINGS.lockDurationMs,
      ensureSchedulers: async () => {
        if (await ensureReconcileSchedule(queues.reconcile, config.reconcile.intervalSeconds)) {
          logger.warn('Reconcile job scheduler was missing from Redis; re-created');
        }
      },
    });
  }

  let server: Server | undefined;
  let metricsServer: Server | undefined;
  const sockets = new Set<Socket>();
  const readiness = async (): Promise<Readiness> => {
    const [postgres, redis] = await Promise.all([
      dataSource.isInitialized ? dataSource.query('SELECT 1').then(() => true, () => false) : false,
      producer.ping().then(() => true, () => false),
    ]);
    if (!tf.cloudHealth) return { postgres, redis };
    return { postgres, redis, credentials: tf.cloudHealth.snapshot(), problems: tf.cloudHealth.problems() };
  };
  if (runsApi) {
    if (!config.http.board) {
      logger.info('Bull Board login is off (set BULL_BOARD_USER and BULL_BOARD_PASSWORD); an admin token still opens it');
    }
    tf.waiter = new OperationWaiter(notifications);
    tf.eventStream = new EventStream({
      events: repositories.events,
      notifications,
      logger: logger.child({ component: 'event-stream' }),
      maxBufferBytes: config.streams.eventStreamMaxBufferBytes,
      view: eventView,
    });
    tf.requestLimits = {
      streams: new ConcurrencyLimit({ total: config.streams.eventStreams.total, perHolder: config.streams.eventStreams.perToken }),
      longPolls: new ConcurrencyLimit({ total: config.streams.longPolls.total, perHolder: config.streams.longPolls.perToken }),
    };
    const priceSource: PriceSource = hetzner;
    tf.app = createApp({
      config,
      events: { waiter: tf.waiter, stream: tf.eventStream, limits: tf.requestLimits },
      webhooks: { webhooks, allowPrivateUrls: config.webhooks.allowPrivateUrls },
      operations,
      cost: new CostService({
        prices: new PriceList({ source: priceSource }),
        repositories,
        defaultLocation: config.hetzner.location,
        logger: logger.child({ component: 'cost' }),
      }),
      tokens: new ApiTokenRepository({ dataSource }),
      operationList: new OperationList({ dataSource }),
      findings: repositories.findings,
      console: { requestBudget: () => hetzner.rateLimiter.state() },
      metrics,
      logger: logger.child({ component: 'http' }),
      queues,
      readiness,
      reconcile: new ReconcileReports({ dataSource, repositories, ledger, outbox }),
    });
  } else {
    // A worker-only process serves just probes and its own metrics (jobs, cloud requests).
    tf.app = createProbeApp({
      metrics,
      readiness,
      config,
      auth: new Authenticator({ bootstrapToken: config.http.apiToken, tokens: new ApiTokenRepository({ dataSource }), logger }),
      logger: logger.child({ component: 'http' }),
    });
  }

  let started = false;
  let stopping: Promise<void> | undefined;

  /** Webhook secrets in clear or under a rotated-out key are sealed with WEBHOOK_SECRET_KEY (see secret-box.ts). */
  async function sealWebhookSecrets(): Promise<void> {
    if (!config.webhooks.secretKeys) {
      logger.warn('WEBHOOK_SECRET_KEY is not set: webhook secrets are stored in the clear (set it to encrypt them at rest)');
      return;
    }
    const { resealed, unreadable } = await webhooks.resealSecrets();
    if (resealed > 0) logger.info({ resealed }, 'Webhook secrets encrypted with the current WEBHOOK_SECRET_KEY');
    if (unreadable.length > 0) {
      logger.error(
        { subscriptions: unreadable },
        'Webhook secrets encrypted with a key that is not configured: add it to WEBHOOK_SECRET_KEYS_PREVIOUS, or their deliveries fail',
      );
    }
  }

  async function start(): Promise<void> {
    if (started) throw new Error('tailfleet already started');
    started = true;
    await dataSource.initialize();
    if (overrides.migrate !== false) {
      const { applied } = await runMigrations(dataSource);
      if (applied.length > 0) logger.info({ applied }, 'Database migrations applied');
    }
    // Not fatal: unsealed rows keep working, and the next start tries again.
    await sealWebhookSecrets().catch((err: unknown) => logger.error({ err }, 'Could not encrypt the webhook secrets'));
    if (apiConnections > 0) {
      // Only an optimisation: a failure here is logged, and the API serves with cold connections.
      await warmAgentCommands(dataSource, apiConnections).catch((err: unknown) =>
        logger.warn({ err }, 'Could not warm the database connections'),
      );
    }
    if (tf.workers) {
      await workerConnection!.ping();
      tf.workers.run();
      tf.rollbackListener?.start();
    }
    // The listener only speeds up waits and streams (they re-read the tables whenever it reconnects),
    // so the process does not wait on it for long: a slow first connect goes on in the background.
    await settlesWithin(notifications.start(), 10_000);
    if (webhookWorker) {
      webhookWorker.run().catch((err: unknown) => logger.error({ err, queue: 'webhooks' }, 'Worker stopped with an error'));
    }
    tf.webhookRelay?.start();
    if (reconcileWorker) {
      reconcileWorker.run().catch((err: unknown) => logger.error({ err, queue: 'reconcile' }, 'Worker stopped with an error'));
      await scheduleReconcile(queues.reconcile, config.reconcile.intervalSeconds);
    }
    // A pass at start, then every few seconds: whatever was accepted while no worker ran, or lost
    // by Redis, reaches the queue.
    tf.relay?.start();
    if (tf.app) {
      server = await listen(tf.app, config.http, sockets);
      tf.url = urlOf(server);
      logger.info({ url: tf.url, role: config.role }, `tailfleet API listening on ${tf.url}`);
    }
    if (config.metrics.listen) {
      const app = createMetricsApp({ metrics, token: config.metrics.token, logger: logger.child({ component: 'metrics' }) });
      metricsServer = await listen(app, config.metrics.listen, sockets);
      tf.metricsUrl = urlOf(metricsServer);
      logger.info({ url: tf.metricsUrl }, `Metrics listening on ${tf.metricsUrl}/metrics`);
    }
    logger.info({ role: config.role, prefix: config.queues.prefix, fleet: config.fleetName }, 'tailfleet started');
  }

  function stop(): Promise<void> {
    stopping ??= shutdown();
    return stopping;
  }

  async function shutdown(): Promise<void> {
    const step = async (name: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        logger.error({ err, step: name }, 'Shutdown step failed');
      }
    };
    logger.info({ role: config.role }, 'Shutting down');

    // 1. No new requests; idle keep-alive sockets closed, busy ones get a moment to answer. Long
    //    polls answer now with what they read, event streams end (clients resume elsewhere).
    tf.waiter?.close();
    tf.eventStream?.close();
    await Promise.all([
      server && step('http', () => closeHttp(server!, sockets, 5_000)),
      metricsServer && step('metrics-http', () => closeHttp(metricsServer!, sockets, 5_000)),
    ]);
    // 2. No new jobs; in-flight ones finish or, past the deadline, are left for another worker.
    //    The reconcile worker drains alongside, under the same deadline: a pass cut short is
    //    re-run from scratch by the next worker (its lock expires, BullMQ requeues it).
    const drainMs = config.queues.drainTimeoutSeconds * 1000;
    await Promise.all([
      tf.workers &&
        step('workers', async () => {
          const { drained } = await tf.workers!.close(drainMs);
          logger.info({ drained }, drained ? 'Workers drained' : 'Workers stopped before their jobs finished');
        }),
      webhookWorker &&
        step('webhook-worker', async () => {
          if (!(await settlesWithin(webhookWorker!.close(), drainMs))) {
            logger.warn({ drainMs }, 'Webhook deliveries still running at the drain deadline; leaving them for another worker');
          }
        }),
      reconcileWorker &&
        step('reconcile-worker', async () => {
          if (!(await settlesWithin(reconcileWorker!.close(), drainMs))) {
            logger.warn({ drainMs }, 'Reconcile pass still running at the drain deadline; leaving it for another worker');
          }
        }),
    ]);
    // 3. The sweep and the relay may be half-way through a pass.
    if (tf.rollbackListener) await step('rollback-listener', () => tf.rollbackListener!.close());
    if (tf.relay) await step('relay', () => tf.relay!.close());
    if (tf.webhookRelay) await step('webhook-relay', () => tf.webhookRelay!.close());
    await step('event-listener', () => notifications.close());
    // 4. Queues, then the Redis connections under them, then the database.
    await step('queues', () => closeQueues(queues));
    await step('redis', () => Promise.all([quit(producer), workerConnection ? quit(workerConnection) : undefined]));
    if (dataSource.isInitialized) await step('database', () => dataSource.destroy());
    logger.info('Shutdown complete');
  }

  return tf;
}

function createProbeApp(deps: {
  metrics: Metrics;
  readiness: () => Promise<Readiness>;
  config: Pick<Config, 'metrics'>;
  auth: Authenticator;
  logger: Logger;
}): Application {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', readyzHandler(deps.readiness, deps.auth));
  if (!deps.config.metrics.listen) app.get('/metrics', metricsHandler(deps.metrics, deps.config.metrics.token));
  app.use((req, _res, next) => {
    next(new HttpProblem('route-not-found', `No route for ${req.method} ${req.path}; a worker serves /healthz, /readyz and /metrics.`));
  });
  app.use(problemErrorHandler({ logger: deps.logger, bodyLimit: '0b' }));
  return app;
}

/** An HTTP server for `app` on host:port, its sockets tracked (shutdown ends them), answering parse errors with problems. */
async function listen(app: Application, at: { host: string; port: number }, sockets: Set<Socket>): Promise<Server> {
  const server = createServer(app);
  server.on('clientError', answerClientError);
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** http://host:port of a listening server, with a wildcard address shown as loopback. */
function urlOf(server: Server): string {
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${addr.port}`;
}

async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true as const), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function quit(conn: Redis): Promise<void> {
  if (conn.status === 'end') return;
  try {
    await conn.quit();
  } catch {
    conn.disconnect();
  }
}

function closeHttp(server: Server, sockets: Set<Socket>, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
