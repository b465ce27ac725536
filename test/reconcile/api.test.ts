import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import { Registry } from 'prom-client';
import type { Principal } from '../../src/api/auth';
import { createReconcileRouter, registerReconcileMetrics } from '../../src/api/reconcile.routes';
import { problemErrorHandler } from '../../src/api/problem';
import { silentLogger } from '../../src/lib/logger';
import {
  createReconcileProcessor,
  createReconcileWorker,
  RECONCILE_SCHEDULER_ID,
  scheduleReconcile,
} from '../../src/processors/reconcile.processor';
import { ReconcileReports, type ReconcileReport } from '../../src/reconcile';
import { MANAGED_LABEL } from '../../src/fleet/server-labels';
import { ledgerFor } from '../helpers/ledger';
import { operationOf, startReconcileHarness, type ReconcileHarness } from './harness';

describe('reconcile: API, metrics, processor and schedule', function () {
  this.timeout(20_000);
  let r: ReconcileHarness;
  let server: Server;
  let base: string;

  before(async () => {
    r = await startReconcileHarness('reconcile_api');
    // The API side needs no cloud clients: only the stored reports and the queue.
    const app = express();
    // The routes check the scope of the principal that bearer authentication would have set.
    const admin: Principal = { name: 'test', scope: 'admin', tokenId: null };
    app.use('/v1', (_req, res, next) => {
      res.locals.principal = admin;
      next();
    });
    app.use('/v1', createReconcileRouter({ reconciler: new ReconcileReports({ dataSource: r.h.ds, repositories: r.h.repositories, ...r.delivery }) }));
    app.use(problemErrorHandler({ logger: silentLogger, bodyLimit: '16kb' }));
    server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await r?.close();
  });
  beforeEach(async () => {
    await r.reset();
  });

  function startWorker() {
    const processor = createReconcileProcessor({
      ledger: ledgerFor(r.h.ds),
      logger: silentLogger,
      metrics: r.metrics,
      queue: r.queues.reconcile,
      reconciler: r.reconciler(),
    });
    return createReconcileWorker({ connection: r.connection, prefix: r.prefix, processor, logger: silentLogger, autorun: true });
  }

  async function latest(predicate: (report: ReconcileReport) => boolean, timeoutMs = 8000): Promise<ReconcileReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await fetch(`${base}/v1/reconcile`);
      if (res.status === 200) {
        const { report } = (await res.json()) as { report: ReconcileReport };
        if (predicate(report)) return report;
      }
      if (Date.now() > deadline) expect.fail('no matching reconcile report in time');
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  it('answers 404 before the first pass, then runs a pass on POST and serves its report', async () => {
    const empty = await fetch(`${base}/v1/reconcile`);
    expect(empty.status).to.equal(404);
    expect(((await empty.json()) as { detail: string }).detail).to.match(/No reconcile pass has finished yet/);

    r.h.sim.control.createServer({ name: 'stray', status: 'running', labels: { [MANAGED_LABEL.key]: MANAGED_LABEL.value } });
    const posted = await fetch(`${base}/v1/reconcile`, { method: 'POST' });
    expect(posted.status).to.equal(202);
    const body = (await posted.json()) as { operation: { id: string; type: string; status: string }; links: { operation: string } };
    expect(body.operation).to.include({ type: 'reconcile', status: 'queued' });
    expect(body.links.operation).to.equal(`/v1/operations/${body.operation.id}`);

    // A second POST while the first is still queued joins it instead of stacking another pass.
    const again = await fetch(`${base}/v1/reconcile`, { method: 'POST' });
    expect(again.status).to.equal(200);
    expect(((await again.json()) as typeof body).operation.id).to.equal(body.operation.id);

    const worker = startWorker();
    try {
      const report = await latest((rep) => rep.operationId === body.operation.id);
      expect(report.trigger).to.equal('manual');
      expect(report.orphanServers.map((o) => o.name)).to.deep.equal(['stray']);
      expect(report.id).to.be.a('string');
      const op = await waitForOperation(body.operation.id);
      expect(op.status).to.equal('succeeded');
    } finally {
      await worker.close();
    }
  });

  it('exposes the latest report as metrics, read from PostgreSQL at scrape time', async () => {
    r.h.sim.control.createServer({ name: 'stray-1', status: 'running', labels: { [MANAGED_LABEL.key]: MANAGED_LABEL.value } });
    r.h.sim.control.createDevice({ hostname: 'stray-device', tags: ['tag:agent'] });
    // Another process ran the pass; this registry belongs to an API process that never did.
    await r.reconciler().runPass({ trigger: 'schedule' });
    const registry = new Registry();
    registerReconcileMetrics(registry, new ReconcileReports({ dataSource: r.h.ds, repositories: r.h.repositories, ...r.delivery }), silentLogger);

    const text = await registry.metrics();

    expect(text).to.contain('tailfleet_reconcile_findings{kind="orphan_servers"} 1');
    expect(text).to.contain('tailfleet_reconcile_findings{kind="orphan_devices"} 1');
    expect(text).to.contain('tailfleet_reconcile_findings{kind="drifted_instances"} 0');
    expect(text).to.match(/tailfleet_reconcile_last_pass_timestamp_seconds \d+/);
    // The process that ran the pass set its own gauge too.
    expect(await r.metrics.registry.getSingleMetricAsString('tailfleet_reconcile_findings')).to.contain('kind="orphan_servers"} 1');
  });

  it('schedules passes with a BullMQ job scheduler at the configured interval, and removes it at 0', async () => {
    await scheduleReconcile(r.queues.reconcile, 1);
    const scheduler = await r.queues.reconcile.getJobScheduler(RECONCILE_SCHEDULER_ID);
    expect(scheduler?.every).to.equal(1000);
    // Upserting again (every worker does at start-up) keeps one scheduler.
    await scheduleReconcile(r.queues.reconcile, 1);
    expect(await r.queues.reconcile.getJobSchedulersCount()).to.equal(1);

    const worker = startWorker();
    try {
      const report = await latest((rep) => rep.trigger === 'schedule');
      expect(report.operationId).to.equal(null);
    } finally {
      await worker.close();
    }

    await scheduleReconcile(r.queues.reconcile, 0);
    expect(await r.queues.reconcile.getJobSchedulersCount()).to.equal(0);
  });

  async function waitForOperation(id: string) {
    const deadline = Date.now() + 5000;
    for (;;) {
      const op = await operationOf(r, id);
      if (op.status === 'succeeded' || op.status === 'failed') return op;
      if (Date.now() > deadline) expect.fail(`operation ${id} still ${op.status}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
});
