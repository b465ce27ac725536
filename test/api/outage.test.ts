import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import sinon from 'sinon';
import IORedis from 'ioredis';
import { createApp } from '../../src/api/app';
import { ApiTokenRepository } from '../../src/db/api-token.repository';
import { createDataSource } from '../../src/db/data-source';
import { OperationList } from '../../src/db/operation-list';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import { Operation } from '../../src/entities';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { closeQueues, createQueues, type Queues } from '../../src/queues/queues';
import { createRepositories } from '../../src/db';
import { OutboxRelay } from '../../src/operations/relay';
import { operationsFor } from '../helpers/ledger';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { API_TOKEN, BOARD, DEFAULTS, apiClient, markRunning, startApiHarness, type ApiClient, type ApiHarness } from './harness';

describe('HTTP API while Redis or PostgreSQL is down', () => {
  // Redis down: PostgreSQL is where work is accepted, so requests are still answered 201/202.
  let h: ApiHarness;
  let brokenRedis: IORedis;
  let brokenQueues: Queues;
  let broken: ApiClient;
  let brokenServer: Server;

  before(async () => {
    h = await startApiHarness('api_outage');
    // Nothing listens on port 1: the producer connection never becomes ready, which is when BullMQ
    // would wait forever without the service's deadline.
    brokenRedis = new IORedis('redis://127.0.0.1:1', { maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => 50 });
    brokenRedis.on('error', () => undefined);
    brokenQueues = createQueues({ connection: brokenRedis, prefix: `tf-test-${randomBytes(6).toString('hex')}`, defaults: { attempts: 1, backoffMs: 10 } });
    for (const q of Object.values(brokenQueues)) q.on('error', () => undefined);
    const { operations, reads, policy, pools } = operationsFor({ dataSource: h.ds, queues: brokenQueues, connection: brokenRedis, defaults: DEFAULTS, redisTimeoutMs: 200 });
    const app = createApp({
      config: { http: { host: '127.0.0.1', port: 0, apiToken: API_TOKEN, board: BOARD } },
      operations,
      reads,
      policy,
      pools,
      tokens: new ApiTokenRepository({ dataSource: h.ds }),
      operationList: new OperationList({ dataSource: h.ds }),
      findings: new OwnershipFindingRepository({ dataSource: h.ds }),
      metrics: createMetrics(),
      logger: silentLogger,
      queues: brokenQueues,
      readiness: async () => ({
        postgres: await h.ds.query('SELECT 1').then(() => true, () => false),
        redis: await brokenRedis.ping().then(() => true, () => false),
      }),
      redisTimeoutMs: 200,
    });
    brokenServer = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    broken = apiClient(`http://127.0.0.1:${(brokenServer.address() as AddressInfo).port}`);
  });

  after(async () => {
    await new Promise<void>((resolve) => brokenServer?.close(() => resolve()));
    brokenServer?.closeAllConnections();
    if (brokenQueues) await Promise.race([closeQueues(brokenQueues).catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
    brokenRedis?.disconnect();
    await h?.close();
  });

  /** The relay of a worker process whose Redis works: delivers whatever the broken API accepted. */
  function relay() {
    const { ledger, outbox } = operationsFor({ dataSource: h.ds, queues: h.queues, connection: h.connection, defaults: DEFAULTS });
    return new OutboxRelay({ dataSource: h.ds, operations: createRepositories(h.ds).operations, ledger, outbox, logger: silentLogger, graceMs: 0 });
  }

  it('accepts a create while Redis is down, and the relay delivers it once Redis answers', async () => {
    const started = Date.now();
    const res = await broken.request('POST', '/v1/agents', { body: { name: 'no-redis' } });
    expect(res.status, res.text).to.equal(201);
    expect(Date.now() - started).to.be.below(3000);
    const operationId = res.body.operation.id as string;
    expect(res.body.operation).to.include({ status: 'queued', type: 'provision' });
    expect(await h.queues.provision.getJob(`op-${operationId}`)).to.equal(undefined);

    const result = await relay().runOnce();
    expect(result.ran).to.equal(true);
    expect(result.added).to.be.at.least(1);
    const job = await h.queues.provision.getJob(`op-${operationId}`);
    expect(job?.data).to.include({
      operationId,
      agentId: res.body.agent.id,
      instanceId: res.body.instance.id,
      provisioningJobId: res.body.provisioningJob.id,
    });
    // A second pass finds the job there and adds nothing.
    const again = await relay().runOnce();
    expect((await h.queues.provision.getJobs(['waiting'])).filter((j) => j.data.operationId === operationId)).to.have.length(1);
    expect(again.added).to.equal(0);
  });

  it('accepts a stop while Redis is down and keeps its Idempotency-Key for the retry', async () => {
    const created = await h.api.request('POST', '/v1/agents', { body: { name: 'stop-no-redis' } });
    const agentId = created.body.agent.id as string;
    await markRunning(h.ds, agentId);
    const headers = { 'idempotency-key': 'stop-during-outage' };

    const accepted = await broken.request('POST', `/v1/agents/${agentId}/stop`, { headers });
    expect(accepted.status, accepted.text).to.equal(202);
    const [queued] = await h.ds.getRepository(Operation).findBy({ agentId, type: 'stop' });
    expect(queued).to.include({ status: 'queued', idempotencyKey: 'client:bootstrap:stop-during-outage', requestedBy: 'bootstrap' });

    // The operation reads from PostgreSQL even though the queue cannot be asked.
    const shown = await broken.request('GET', `/v1/operations/${queued!.id}`);
    expect(shown.status).to.equal(200);
    expect(shown.body.operation.status).to.equal('queued');
    expect(shown.body.job).to.include({ queue: 'stop', state: 'unavailable' });

    const retried = await h.api.request('POST', `/v1/agents/${agentId}/stop`, { headers });
    expect(retried.status, retried.text).to.equal(200);
    expect(retried.body.operation.id).to.equal(queued!.id);
    await relay().runOnce();
    expect((await h.queues.stop.getJob(`op-${queued!.id}`))?.data.operationId).to.equal(queued!.id);
  });

  it('reports not ready and still serves /metrics', async () => {
    const ready = await broken.request('GET', '/readyz', { token: null });
    expect(ready.status).to.equal(503);
    expect(ready.body).to.deep.equal({ status: 'unavailable', down: ['redis'] });
    const metrics = await broken.request('GET', '/metrics', { token: null });
    expect(metrics.status).to.equal(200);
    expect(metrics.text).to.contain('tailfleet_http_requests_total');
    expect(metrics.text).not.to.match(/tailfleet_queue_jobs\{/);
  });

  it('answers an unexpected failure with an opaque 500', async () => {
    const stub = sinon.stub(h.reads, 'listAgents').rejects(new Error('relation "x" broke; password=hunter2'));
    try {
      const res = await h.api.request('GET', '/v1/agents');
      expect(res.status).to.equal(500);
      expect(res.body).to.include({ type: 'urn:tailfleet:problem:internal-error', detail: 'An unexpected error occurred.' });
      expect(res.text).not.to.match(/hunter2|relation|Error:|\.ts:/);
    } finally {
      stub.restore();
    }
  });

  it('answers 503 when PostgreSQL goes away', async () => {
    const url = new URL(h.db.url);
    const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
    url.host = `127.0.0.1:${proxy.port}`;
    const ds = createDataSource({ url: url.toString(), poolSize: 2, connectTimeoutMs: 1000 });
    await ds.initialize();
    const { operations, reads, policy, pools } = operationsFor({ dataSource: ds, queues: h.queues, connection: h.connection, defaults: DEFAULTS });
    const app = createApp({
      config: { http: { host: '127.0.0.1', port: 0, apiToken: API_TOKEN, board: BOARD } },
      operations,
      reads,
      policy,
      pools,
      tokens: new ApiTokenRepository({ dataSource: ds }),
      operationList: new OperationList({ dataSource: ds }),
      findings: new OwnershipFindingRepository({ dataSource: ds }),
      metrics: createMetrics(),
      logger: silentLogger,
      queues: h.queues,
      readiness: async () => ({ postgres: await ds.query('SELECT 1').then(() => true, () => false), redis: true }),
    });
    const server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    const api = apiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      expect((await api.request('GET', '/v1/agents')).status).to.equal(200);
      await proxy.cut();
      const list = await api.request('GET', '/v1/agents');
      expect(list.status, list.text).to.equal(503);
      expect(list.body).to.include({ type: 'urn:tailfleet:problem:service-unavailable' });
      expect(list.text).not.to.match(/ECONNREFUSED|terminated|127\.0\.0\.1/);
      const create = await api.request('POST', '/v1/agents', { body: { name: 'no-postgres' } });
      expect(create.status, create.text).to.equal(503);
      const ready = await api.request('GET', '/readyz', { token: null });
      expect(ready.status).to.equal(503);
      expect(ready.body.down).to.include('database');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await ds.destroy().catch(() => undefined);
    }
  });
});
