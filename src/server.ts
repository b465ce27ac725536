import type { HetznerProjects } from './clients/hetzner/projects';
import type { PolicyLoop } from './policy/policy-loop';
import 'reflect-metadata';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Application } from 'express';
import type { DataSource } from 'typeorm';
import { Authenticator } from './api/auth';
import { createMetricsApp, type Readiness } from './api/probes';
import { createApiRole } from './composition/api-role';
import { createCore, sealWebhookSecrets } from './composition/core';
import { closeHttp, createProbeApp, listen, urlOf } from './composition/http';
import { createInfrastructure } from './composition/infrastructure';
import type { TailfleetOverrides } from './composition/overrides';
import type { ShutdownStep } from './composition/shutdown-step';
import { settlesWithin } from './lib/time';
import { createWorkerRole } from './composition/worker-role';
import type { Config } from './config';
import { warmAgentCommands, type Repositories } from './db';
import { openDatabase } from './composition/database';
import type { CloudCredentialHealth } from './clients/observers';
import type { Logger } from './lib/logger';
import type { Metrics } from './lib/metrics';
import type { OperationLedger } from './operations/ledger';
import type { Outbox } from './operations/outbox';
import type { OutboxRelay } from './operations/relay';
import type { Queues } from './queues/queues';
import type { Reconciler } from './reconcile';
import type { OperationsService } from './operations/requests';
import type { RollbackListener } from './operations/rollback-listener';
import type { EventNotifications } from './events/notifications';
import type { ConcurrencyLimit } from './events/concurrency-limit';
import type { EventStream } from './events/event-stream';
import type { OperationWaiter } from './events/operation-waiter';
import type { WebhookRepository } from './webhooks/webhook.repository';
import type { WebhookRelay } from './webhooks/delivery-relay';
import type { WorkerPool } from './workers';
import type { PoolPolicy } from './pools/pool-policy';
import type { HetznerClient } from './clients/hetzner/hetzner.client';
import type { Workflows } from './workflows';

export type { TailfleetOverrides } from './composition/overrides';

/**
 * The composition root: the only place that builds infrastructure. Order follows the data flow —
 * config → infrastructure (logger, database, repositories, Redis, queues) → core (ledger, outbox,
 * operations, clients) → the API role and the worker role — and shutdown walks it backwards. Each
 * factory lives in src/composition/.
 */

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
  /** The Hetzner projects, each with its own client (HETZNER_PROJECTS, or HETZNER_API_TOKEN as `default`). */
  projects: HetznerProjects;
  /** The HTTP app: the API (roles all and api) or only probes and metrics (role worker). */
  app?: Application;
  /** Worker roles only: the workflows the processors call. */
  workflows?: Workflows;
  workers?: WorkerPool;
  rollbackListener?: RollbackListener;
  /** Worker roles only: re-delivers accepted operations whose job Redis does not hold. */
  relay?: OutboxRelay;
  /** Worker roles only: drift reconciler and orphan sweeper, run by the reconcile queue's worker. */
  reconciler?: Reconciler;
  /** Worker roles only: idle ladders, expiry and auto-hibernate (src/policy). */
  policyLoop?: PolicyLoop;
  /** Worker roles only: keeps every pool at its minReady. */
  poolPolicy?: PoolPolicy;
  /** The process's one Hetzner client (its request budget is the pool policy's too). */
  hetzner: HetznerClient;
  /** The process's one event reader: every event row written, by any process, once committed. */
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
  const roles = { api: config.role === 'all' || config.role === 'api', workers: config.role === 'all' || config.role === 'worker' };
  const infra = createInfrastructure(config, roles, overrides);
  const { logger, dataSource, producer } = infra;
  const core = createCore(config, infra, roles, overrides);
  const worker = roles.workers ? createWorkerRole(config, infra, core, overrides) : undefined;
  const readiness = async (): Promise<Readiness> => {
    const [postgres, redis] = await Promise.all([
      dataSource.isInitialized ? dataSource.query('SELECT 1').then(() => true, () => false) : false,
      producer.ping().then(() => true, () => false),
    ]);
    if (!core.cloudHealth) return { postgres, redis };
    return { postgres, redis, credentials: core.cloudHealth.snapshot(), problems: core.cloudHealth.problems() };
  };
  const api = roles.api ? createApiRole(config, infra, core, readiness) : undefined;
  const app =
    api?.app ??
    createProbeApp({
      metrics: infra.metrics,
      readiness,
      config,
      auth: new Authenticator({ bootstrapToken: config.http.apiToken, tokens: infra.repositories.tokens, logger }),
      logger: logger.child({ component: 'http' }),
    });
  const { metrics, repositories, queues } = infra;
  const tf: Tailfleet = { config, logger, metrics, dataSource, queues, repositories, app, ...core, ...worker?.parts, ...api?.parts, start, stop };
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  let started = false;
  let stopping: Promise<void> | undefined;

  async function start(): Promise<void> {
    if (started) throw new Error('tailfleet already started');
    started = true;
    await openDatabase(dataSource, { migrate: overrides.migrate !== false, logger, waitMs: overrides.databaseStartupWaitMs });
    // Not fatal: unsealed rows keep working, and the next start tries again.
    await sealWebhookSecrets(config, core.webhooks, logger).catch((err: unknown) => logger.error({ err }, 'Could not encrypt the webhook secrets'));
    if (infra.apiConnections > 0) {
      // Only an optimisation: a failure here is logged, and the API serves with cold connections.
      await warmAgentCommands(dataSource, infra.apiConnections).catch((err: unknown) => logger.warn({ err }, 'Could not warm the database connections'));
    }
    await worker?.start();
    // The listener only speeds up waits and streams (they re-read the tables whenever it reconnects),
    // so the process does not wait on it for long: a slow first connect goes on in the background.
    await settlesWithin(core.notifications.start(), 10_000);
    await worker?.startLoops();
    servers.push(await listen(app, config.http, sockets));
    tf.url = urlOf(servers[0]);
    logger.info({ url: tf.url, role: config.role }, `tailfleet API listening on ${tf.url}`);
    if (config.metrics.listen) {
      const metricsApp = createMetricsApp({ metrics, token: config.metrics.token, logger: logger.child({ component: 'metrics' }) });
      servers.push(await listen(metricsApp, config.metrics.listen, sockets));
      tf.metricsUrl = urlOf(servers[1]);
      logger.info({ url: tf.metricsUrl }, `Metrics listening on ${tf.metricsUrl}/metrics`);
    }
    logger.info({ role: config.role, prefix: config.queues.prefix, fleet: config.fleetName }, 'tailfleet started');
  }

  function stop(): Promise<void> {
    stopping ??= shutdown();
    return stopping;
  }

  async function shutdown(): Promise<void> {
    const step: ShutdownStep = async (name, fn) => {
      await fn().catch((err: unknown) => logger.error({ err, step: name }, 'Shutdown step failed'));
    };
    logger.info({ role: config.role }, 'Shutting down');
    // 1. No new requests; idle keep-alive sockets closed, busy ones get a moment to answer.
    api?.close();
    await Promise.all(servers.map((server, i) => step(i === 0 ? 'http' : 'metrics-http', () => closeHttp(server, sockets, 5_000))));
    // 2. No new jobs; in-flight ones finish or, past the deadline, are left for another worker.
    await worker?.drain(config.queues.drainTimeoutSeconds * 1000, step);
    // 3. The sweep and the relays may be half-way through a pass.
    await worker?.closeLoops(step);
    await step('event-listener', () => core.notifications.close());
    // 4. Queues, then the Redis connections under them, then the database.
    await step('queues', () => infra.closeQueues());
    await step('redis', () => infra.closeRedis());
    if (dataSource.isInitialized) await step('database', () => dataSource.destroy());
    logger.info('Shutdown complete');
  }

  return tf;
}
