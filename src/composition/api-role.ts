import { RedisCapacityStore } from '../workflows/placement';
import { PolicyRequests } from '../policy/requests';
import type { Application } from 'express';
import { createApp } from '../api/app';
import type { Readiness } from '../api/probes';
import { eventView } from '../api/views';
import type { Config } from '../config';
import { CostService } from '../cost/cost.service';
import { PriceList } from '../cost/prices';
import { ConcurrencyLimit } from '../events/concurrency-limit';
import { EventStream } from '../events/event-stream';
import { OperationWaiter } from '../events/operation-waiter';
import { OperationReads } from '../operations/read-models';
import type { Core } from './core';
import type { Infrastructure } from './infrastructure';

export interface ApiRole {
  app: Application;
  /** What the process shows of its API role (Tailfleet's fields). */
  parts: ApiParts;
  /** Long polls answer now with what they read, event streams end (clients resume elsewhere). */
  close(): void;
}

export interface ApiParts {
  /** Long polls on operations and the SSE event stream. */
  waiter: OperationWaiter;
  eventStream: EventStream;
  /** The caps on open event streams and long polls. */
  requestLimits: { streams: ConcurrencyLimit; longPolls: ConcurrencyLimit };
}

/** An API process: the HTTP app over the operations, waits and event streams, costs, tokens and webhooks. */
export function createApiRole(config: Config, infra: Infrastructure, core: Core, readiness: () => Promise<Readiness>): ApiRole {
  const { repositories, logger } = infra;
  if (!config.http.board) {
    logger.info('Bull Board login is off (set BULL_BOARD_USER and BULL_BOARD_PASSWORD); an admin token still opens it');
  }
  const waiter = new OperationWaiter(core.notifications);
  const eventStream = new EventStream({
    events: repositories.events,
    notifications: core.notifications,
    logger: logger.child({ component: 'event-stream' }),
    maxBufferBytes: config.streams.eventStreamMaxBufferBytes,
    view: eventView,
  });
  const requestLimits = {
    streams: new ConcurrencyLimit({ total: config.streams.eventStreams.total, perHolder: config.streams.eventStreams.perToken }),
    longPolls: new ConcurrencyLimit({ total: config.streams.longPolls.total, perHolder: config.streams.longPolls.perToken }),
  };
  const app = createApp({
    config,
    events: { waiter, stream: eventStream, limits: requestLimits },
    webhooks: { webhooks: core.webhooks, allowPrivateUrls: config.webhooks.allowPrivateUrls },
    operations: core.operations,
    reads: new OperationReads({ repositories, queues: infra.queues, logger: logger.child({ component: 'reads' }) }),
    policy: new PolicyRequests({ repositories, maxLifetimeHours: config.policy.maxAgentLifetimeHours, logger: logger.child({ component: 'policy' }) }),
    cost: new CostService({
      prices: new PriceList({ source: core.hetzner }),
      repositories,
      defaultLocation: config.hetzner.location,
      logger: logger.child({ component: 'cost' }),
      projects: { list: config.hetzner.projects, capacity: new RedisCapacityStore({ redis: infra.producer, prefix: config.queues.prefix }) },
    }),
    tokens: repositories.tokens,
    findings: repositories.findings,
    console: { requestBudget: () => core.hetzner.rateLimiter.state() },
    operationList: repositories.operationList,
    metrics: infra.metrics,
    logger: logger.child({ component: 'http' }),
    queues: infra.queues,
    readiness,
    reconcile: core.reports,
    pools: core.pools,
  });
  return {
    app,
    parts: { waiter, eventStream, requestLimits },
    close() {
      waiter.close();
      eventStream.close();
    },
  };
}
