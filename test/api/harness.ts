import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { jsonOf } from '../../src/lib/json';
import { createApp } from '../../src/api/app';
import { ApiTokenRepository } from '../../src/db/api-token.repository';
import { OperationList } from '../../src/db/operation-list';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import { transition } from '../../src/db/transitions';
import { Instance } from '../../src/entities';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { closeQueues, createProducerConnection, createQueues, type Queues } from '../../src/queues/queues';
import type { OperationReads } from '../../src/operations/read-models';
import type { OperationsService } from '../../src/operations/requests';
import { operationsFor } from '../helpers/ledger';
import { contractOf, type ContractValidator } from '../helpers/contract';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { eventView } from '../../src/api/views';
import { EventRepository } from '../../src/db/event.repository';
import { ConcurrencyLimit } from '../../src/events/concurrency-limit';
import { EventStream } from '../../src/events/event-stream';
import { EventNotifications } from '../../src/events/notifications';
import { OperationWaiter } from '../../src/events/operation-waiter';
import { WebhookRepository } from '../../src/webhooks/webhook.repository';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const API_TOKEN = 'test-api-token-0123456789';
export const BOARD = { user: 'operator', password: 'board-password-1' };
export const DEFAULTS = { serverType: 'cx22', image: 'ubuntu-24.04', location: 'fsn1' };

export interface ApiResponse {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

export interface ApiClient {
  baseUrl: string;
  request(
    method: string,
    path: string,
    opts?: { body?: unknown; raw?: string; token?: string | null; headers?: Record<string, string> },
  ): Promise<ApiResponse>;
}

/**
 * A client for the API under test. Every answer to a documented route is checked against the
 * OpenAPI document the app serves (test/helpers/contract.ts): an undocumented status or a body that
 * does not match its schema fails the test that made the request.
 */
export function apiClient(baseUrl: string): ApiClient {
  let contract: Promise<ContractValidator> | undefined;
  return {
    baseUrl,
    async request(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const token = opts.token === undefined ? API_TOKEN : opts.token;
      if (token !== null) headers.authorization = `Bearer ${token}`;
      let body: string | undefined;
      if (opts.raw !== undefined) body = opts.raw;
      else if (opts.body !== undefined) {
        body = JSON.stringify(opts.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(baseUrl + path, { method, headers, body });
      // An event stream stays open: its status and headers are the answer.
      const streaming = res.headers.get('content-type')?.startsWith('text/event-stream') === true;
      const text = streaming ? (await res.body?.cancel(), '') : await res.text();
      const parsed = jsonOf(text);
      if (method !== 'HEAD') {
        contract ??= contractOf(baseUrl);
        const wrong = (await contract).check(method, path, {
          status: res.status,
          contentType: res.headers.get('content-type'),
          body: text ? (parsed ?? text) : undefined,
        });
        if (wrong.length > 0) throw new Error(`The answer breaks the OpenAPI document:\n${wrong.join('\n')}\n${text.slice(0, 500)}`);
      }
      return { status: res.status, headers: res.headers, text, body: parsed };
    },
  };
}

/** One app over a real database and real queues under a prefix of its own. */
export interface ApiHarness {
  db: TestDatabase;
  ds: DataSource;
  connection: Redis;
  queues: Queues;
  prefix: string;
  metrics: Metrics;
  operations: OperationsService;
  reads: OperationReads;
  server: Server;
  api: ApiClient;
  close(): Promise<void>;
}

export async function startApiHarness(label: string): Promise<ApiHarness> {
  const db = await createTestDatabase(label);
  const prefix = `tf-test-${randomBytes(6).toString('hex')}`;
  const connection = createProducerConnection(REDIS_URL);
  await new Promise<void>((resolve, reject) => {
    connection.once('ready', resolve);
    connection.once('error', reject);
  });
  const queues = createQueues({ connection, prefix, defaults: { attempts: 3, backoffMs: 50 } });
  const metrics = createMetrics();
  const { operations, reads, policy, pools } = operationsFor({ dataSource: db.dataSource, queues, connection, defaults: DEFAULTS, redisTimeoutMs: 1000 });
  const notifications = new EventNotifications({ connectionString: db.url, logger: silentLogger });
  await notifications.start();
  const events = {
    waiter: new OperationWaiter(notifications),
    stream: new EventStream({ events: new EventRepository({ dataSource: db.dataSource }), notifications, logger: silentLogger, view: eventView }),
    limits: { streams: new ConcurrencyLimit({ total: 100, perHolder: 10 }), longPolls: new ConcurrencyLimit({ total: 1000, perHolder: 100 }) },
  };
  const app = createApp({
    events,
    webhooks: { webhooks: new WebhookRepository({ dataSource: db.dataSource }), allowPrivateUrls: false },
    config: { http: { host: '127.0.0.1', port: 0, apiToken: API_TOKEN, board: BOARD } },
    operations,
    reads,
    policy,
    pools,
    tokens: new ApiTokenRepository({ dataSource: db.dataSource }),
    operationList: new OperationList({ dataSource: db.dataSource }),
    findings: new OwnershipFindingRepository({ dataSource: db.dataSource }),
    metrics,
    logger: silentLogger,
    queues,
    readiness: async () => {
      const [postgres, redis] = await Promise.all([
        db.dataSource.query('SELECT 1').then(() => true, () => false),
        connection.ping().then(() => true, () => false),
      ]);
      return { postgres, redis };
    },
  });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    db,
    ds: db.dataSource,
    connection,
    queues,
    prefix,
    metrics,
    operations,
    reads,
    server,
    api: apiClient(`http://127.0.0.1:${port}`),
    async close() {
      events.waiter.close();
      events.stream.close();
      await notifications.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await Promise.all(Object.values(queues).map((q) => q.obliterate({ force: true }).catch(() => undefined)));
      await closeQueues(queues);
      await connection.quit();
      await db.drop();
    },
  };
}

/** Moves an agent's freshly created instance to running, as a successful provision would. */
export async function markRunning(ds: DataSource, agentId: string): Promise<Instance> {
  const instance = await ds.getRepository(Instance).findOneByOrFail({ agentId });
  await transition(ds, { entity: 'instance', id: instance.id, from: ['pending'], to: 'provisioning', reason: 'test' });
  await transition(ds, {
    entity: 'instance',
    id: instance.id,
    from: ['provisioning'],
    to: 'running',
    reason: 'test',
    patch: { serverId: '4242', startedAt: new Date() },
  });
  await transition(ds, { entity: 'agent', id: agentId, from: ['draft'], to: 'provisioning', reason: 'test' });
  await transition(ds, { entity: 'agent', id: agentId, from: ['provisioning'], to: 'active', reason: 'test' });
  return ds.getRepository(Instance).findOneByOrFail({ id: instance.id });
}

/** Jobs of every state in one queue, by id. */
export async function jobIdsIn(queue: Queues[keyof Queues]): Promise<string[]> {
  const jobs = await queue.getJobs(['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed']);
  return jobs.map((j) => j.id!).sort();
}
