import { expect } from 'chai';
import pino from 'pino';
import type { Tailfleet } from '../../src/server';
import { RECONCILE_SCHEDULER_ID } from '../../src/processors/reconcile.processor';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { operationEnded } from '../helpers/launched';
import { apiClient, createSuite, deleteRedisPrefix, waitFor, type ApiClient, type Suite } from './stack';

// Accepted work lives in PostgreSQL; Redis only delivers it and may lose anything at any moment.

describe('pipeline: durable operations', function () {
  this.timeout(60_000);

  let suite: Suite;
  let producer: Tailfleet;
  let api: ApiClient;
  const relayFast = { RELAY_INTERVAL_MS: '200' };

  before(async () => {
    suite = await createSuite('pipeline_durable');
    producer = await suite.launch({ env: { ROLE: 'api' } });
    api = apiClient(producer.url!, suite.apiToken);
  });

  after(async () => {
    await suite?.close();
  });

  // Each test starts its own workers; none may outlive it and take another test's jobs.
  let workers: Tailfleet[] = [];
  const launchWorker = async (env: Record<string, string> = {}) => {
    const tf = await suite.launch({ env: { ROLE: 'worker', ...relayFast, ...env } });
    workers.push(tf);
    return tf;
  };
  afterEach(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    workers = [];
  });

  const status = async (operationId: string) => (await api.get(`/v1/operations/${operationId}`)).body.operation;
  const finished = async (operationId: string, timeoutMs = 20_000) => (await operationEnded(api, operationId, { timeoutMs })).operation;
  const rollbacksOf = async (provisioningJobId: string) =>
    Number(
      (
        await suite.db.dataSource.query(`SELECT count(*)::int AS n FROM operations WHERE type = 'rollback' AND provisioning_job_id = $1`, [
          provisioningJobId,
        ])
      )[0].n,
    );

  it('a stop whose queue job Redis lost is carried out once a worker runs, and the agent takes commands again', async () => {
    const worker = await launchWorker();
    const created = await api.post('/v1/agents', { name: 'lost-stop' });
    expect(created.status).to.equal(201);
    expect((await finished(created.body.operation.id)).status).to.equal('succeeded');
    await worker.stop();

    const stop = await api.post(`/v1/agents/${created.body.agent.id}/stop`);
    expect(stop.status).to.equal(202);
    const operationId = stop.body.operation.id as string;
    // Redis loses everything (a restart without persistence, FLUSHALL, a failover).
    await deleteRedisPrefix(suite.prefix);
    expect(await producer.queues.stop.getJob(`op-${operationId}`)).to.equal(undefined);

    await launchWorker();
    const done = await finished(operationId);
    expect(done.status, done.error).to.equal('succeeded');
    expect(done.attempts).to.equal(1);
    const start = await api.post(`/v1/agents/${created.body.agent.id}/start`);
    expect(start.status, JSON.stringify(start.body)).to.equal(202);
    expect((await finished(start.body.operation.id)).status).to.equal('succeeded');
  });

  it('a provision whose queue job Redis lost is carried out, not rolled back', async () => {
    const workers = producer; // no worker runs while the request is accepted
    expect(workers.workers).to.equal(undefined);
    const created = await api.post('/v1/agents', { name: 'lost-provision' });
    expect(created.status).to.equal(201);
    await deleteRedisPrefix(suite.prefix);

    await launchWorker();
    const done = await finished(created.body.operation.id);
    expect(done.status, done.error).to.equal('succeeded');
    expect(await rollbacksOf(created.body.provisioningJob.id)).to.equal(0);
    const servers = suite.sim.control.state().servers.filter((s) => s.labels['tailfleet-agent'] === created.body.agent.id);
    expect(servers.map((s) => s.status)).to.deep.equal(['running']);
  });

  it('re-creates the reconcile job scheduler when Redis lost it', async () => {
    const worker = await launchWorker({ RECONCILE_INTERVAL_SECONDS: '3600' });
    expect(await worker.queues.reconcile.getJobScheduler(RECONCILE_SCHEDULER_ID)).to.not.equal(undefined);
    await deleteRedisPrefix(suite.prefix);
    await waitFor('the scheduler to be back', async () => (await worker.queues.reconcile.getJobScheduler(RECONCILE_SCHEDULER_ID)) !== undefined);
  });

  it('a job added or duplicated by hand that does not match its operation fails at once and changes nothing', async () => {
    const worker = await launchWorker();
    const a = await api.post('/v1/agents', { name: 'hand-a' });
    const b = await api.post('/v1/agents', { name: 'hand-b' });
    await finished(a.body.operation.id);
    await finished(b.body.operation.id);
    const stop = await api.post(`/v1/agents/${a.body.agent.id}/stop`);
    const stopId = stop.body.operation.id as string;
    await finished(stopId);

    const eventsOf = async () =>
      (await suite.db.dataSource.query(`SELECT count(*)::int AS n FROM events`))[0].n as number;
    const before = await eventsOf();
    const statusesBefore = await suite.db.dataSource.query(`SELECT id, status, attempts FROM operations ORDER BY id`);
    const q = worker.queues.stop;
    const jobs = [
      // Another agent's id on a finished operation.
      await q.add('stop', { operationId: stopId, agentId: b.body.agent.id }),
      // A duplicate of the operation's job under a new id.
      await q.add('stop', { operationId: stopId, agentId: a.body.agent.id }),
      // The provision operation, sent to the stop queue.
      await q.add('stop', { operationId: a.body.operation.id, agentId: a.body.agent.id }),
      // Not a payload at all.
      await q.add('stop', { hello: 'world' } as never),
    ];
    for (const job of jobs) {
      const failed = await waitFor(`job ${job.id} to fail`, async () => ((await q.getJobState(job.id!)) === 'failed' ? q.getJob(job.id!) : undefined));
      expect(failed!.attemptsMade, 'failed at once, no retries').to.equal(1);
      expect(failed!.failedReason).to.match(/does not match|not a stop payload/);
    }
    expect(await eventsOf()).to.equal(before);
    expect(await suite.db.dataSource.query(`SELECT id, status, attempts FROM operations ORDER BY id`)).to.deep.equal(statusesBefore);
  });

  it('PostgreSQL unreachable mid-provision: the job waits without spending an attempt and the provision is not rolled back', async () => {
    suite.sim.control.setTimings({ enrollDelayMs: 1500 });
    const url = new URL(suite.db.url);
    const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
    url.host = `127.0.0.1:${proxy.port}`;
    try {
      // One attempt only: a failure that counted would be final, and roll the provision back.
      const worker = await launchWorker({ DATABASE_URL: url.toString(), JOB_ATTEMPTS: '1', DB_OUTAGE_RETRY_MS: '300' });
      const deferred = async () =>
        (await worker.metrics.jobs.get()).values.find((v) => v.labels.queue === 'provision' && v.labels.outcome === 'deferred')?.value ?? 0;
      const created = await api.post('/v1/agents', { name: 'db-outage' });
      const operationId = created.body.operation.id as string;
      await waitFor('the provision to wait for enrollment', async () => (await status(operationId)).currentStep === 'wait-enrollment', {
        timeoutMs: 15_000,
      });
      await proxy.cut();
      // The enrollment completes while the database is away; the write that follows cannot happen,
      // and the job is put back to wait instead of failing.
      await waitFor('the job to wait for the database', async () => (await deferred()) > 0, { timeoutMs: 15_000 });
      await proxy.restore();

      const done = await finished(operationId);
      expect(done.status, done.error).to.equal('succeeded');
      expect(await rollbacksOf(created.body.provisioningJob.id)).to.equal(0);
      // The operation's success commits with the provision's last moves, a moment before BullMQ
      // records the job completed: read the job once it is. The delivery after the outage ran as the
      // same attempt: the wait spent none (each delivery logs the attempt it runs as).
      const job = await waitFor('the provision job to complete', async () => {
        const j = await producer.queues.provision.getJob(`op-${operationId}`);
        return (await j?.isCompleted()) ? j : undefined;
      });
      const log = (await producer.queues.provision.getJobLogs(job!.id!)).logs.join('\n');
      const attempts = [...log.matchAll(/attempt (\d+)\/\d+ started/g)].map((m) => Number(m[1]));
      expect(attempts.length, log).to.be.at.least(2);
      expect(new Set(attempts), log).to.deep.equal(new Set([1]));
      expect(log).to.contain('database unreachable');
      const servers = suite.sim.control.state().servers.filter((s) => s.labels['tailfleet-agent'] === created.body.agent.id);
      expect(servers.map((s) => s.status)).to.deep.equal(['running']);
    } finally {
      suite.sim.control.setTimings({ enrollDelayMs: 20 });
      await proxy.cut().catch(() => undefined);
    }
  });

  describe('a process that starts while PostgreSQL cannot be reached', () => {
    /** A proxied database URL whose proxy is cut, and the warnings of a logger to watch the wait. */
    const unreachable = async () => {
      const url = new URL(suite.db.url);
      const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
      url.host = `127.0.0.1:${proxy.port}`;
      await proxy.cut();
      const warnings: string[] = [];
      const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
      const waits = () => warnings.filter((l) => l.includes('PostgreSQL cannot be reached yet')).length;
      return { proxy, databaseUrl: url.toString(), logger, waits };
    };

    it('waits for it, and starts once it answers', async () => {
      const { proxy, databaseUrl, logger, waits } = await unreachable();
      try {
        let started = false;
        const starting = suite.launch({ env: { ROLE: 'worker', ...relayFast, DATABASE_URL: databaseUrl }, overrides: { logger } }).then((tf) => {
          started = true;
          workers.push(tf);
          return tf;
        });
        await waitFor('the worker to find PostgreSQL unreachable twice', async () => waits() >= 2);
        expect(started, 'started without its database').to.equal(false);
        await proxy.restore();
        const worker = await starting;
        // It works: an accepted stop reaches it and is carried out.
        expect(await worker.dataSource.query('SELECT 1 AS ok')).to.deep.equal([{ ok: 1 }]);
        const created = await api.post('/v1/agents', { name: 'late-database' });
        const done = await finished(created.body.operation.id);
        expect(done.status, done.error).to.equal('succeeded');
      } finally {
        await Promise.all(workers.map((w) => w.stop()));
        workers = [];
        await proxy.cut().catch(() => undefined);
      }
    });

    it('gives up with the database error once its wait is over', async () => {
      const { proxy, databaseUrl, logger, waits } = await unreachable();
      try {
        const failure = await suite
          .launch({ env: { ROLE: 'worker', DATABASE_URL: databaseUrl }, overrides: { logger, databaseStartupWaitMs: 500 } })
          .then(
            () => undefined,
            (err: Error) => err,
          );
        expect(failure, 'start did not fail').to.be.instanceOf(Error);
        expect(String(failure!.message)).to.match(/ECONNREFUSED|connect/i);
        expect(waits()).to.be.at.least(1);
      } finally {
        await proxy.cut().catch(() => undefined);
      }
    });
  });

  it('a job BullMQ fails for stalling (its worker died) is delivered again, not failed', async () => {
    // Jobs stall at once and fail on the first stall: only the ledger's requeue keeps the stop alive.
    const settings = { worker: { lockDurationMs: 1000, stalledIntervalMs: 300, maxStalledCount: 0 } };
    const launch = async () => {
      const tf = await suite.launch({ env: { ROLE: 'worker', ...relayFast }, overrides: settings });
      workers.push(tf);
      return tf;
    };
    const first = await launch();
    const created = await api.post('/v1/agents', { name: 'stalls' });
    expect((await finished(created.body.operation.id)).status).to.equal('succeeded');
    suite.sim.control.setTimings({ shutdownMs: 3000 });
    try {
      const stop = await api.post(`/v1/agents/${created.body.agent.id}/stop`);
      const operationId = stop.body.operation.id as string;
      await waitFor('the stop to run', async () => (await status(operationId)).status === 'running');
      // The worker dies without a word: its lock is no longer renewed.
      await first.workers!.workers.stop!.close(true);
      await launch();
      const done = await finished(operationId);
      expect(done.status, done.error).to.equal('succeeded');
      const events: { to_status: string; reason: string }[] = await suite.db.dataSource.query(
        `SELECT to_status, reason FROM events WHERE entity_type = 'operation' AND entity_id = $1 ORDER BY id`,
        [operationId],
      );
      expect(events.map((e) => e.to_status)).to.not.include('failed');
      expect(events.some((e) => e.reason.startsWith('job stalled'))).to.equal(true);
    } finally {
      suite.sim.control.setTimings({ shutdownMs: 20 });
    }
  });
});
