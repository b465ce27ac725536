import { expect } from 'chai';
import { UnrecoverableError, Worker } from 'bullmq';
import { transition } from '../../src/db/transitions';
import { jobIds } from '../../src/queues/queues';
import { serverLabels } from '../../src/fleet/server-labels';
import { newAgent } from '../helpers/lifecycle';
import { claimOperation, instanceOf, operationOf, startReconcileHarness, stateOf, STUCK_AFTER, type ReconcileHarness } from './harness';

const LATER = () => Date.now() + 2 * STUCK_AFTER.stopping;

describe('reconcile: instances stuck in a transitional state', function () {
  this.timeout(20_000);
  let r: ReconcileHarness;

  before(async () => {
    r = await startReconcileHarness('reconcile_stuck');
  });
  after(async () => {
    await r?.close();
  });
  beforeEach(async () => {
    await r.reset();
  });

  /** A stop whose worker died after the first step: instance stopping, operation running, no job left. */
  async function abandonedStop(name: string) {
    const a = await r.agent(name);
    const opId = await claimOperation(r, 'stop', a.agentId);
    await transition(r.h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'stopping', reason: 'test: stop began', operationId: opId });
    return { ...a, opId };
  }

  it('leaves a transitional instance alone until its timeout has passed', async () => {
    const a = await abandonedStop('young');
    const report = await r.reconciler().runPass();
    expect(report.stuck).to.deep.equal([]);
    expect(await stateOf(await r.queues.stop.getJob(jobIds.operation(a.opId)))).to.equal('missing');
  });

  it('enqueues the operation again, under its own job id, when no job is left; a second pass finds it waiting', async () => {
    const a = await abandonedStop('abandoned');

    const report = await r.reconciler({}, LATER).runPass();

    expect(report.stuck).to.have.length(1);
    expect(report.stuck[0]).to.include({ instanceId: a.instanceId, status: 'stopping', action: 'requeued', operationId: a.opId });
    const job = await r.queues.stop.getJob(jobIds.operation(a.opId));
    expect(await stateOf(job)).to.equal('waiting');
    expect(job!.data).to.deep.equal({ operationId: a.opId, agentId: a.agentId, requestedBy: 'system' });
    const op = await operationOf(r, a.opId);
    expect(op.status).to.equal('queued');
    expect(op.queueJobId).to.equal(jobIds.operation(a.opId));
    expect(report.summary).to.include({ stuckInstances: 1, repairs: 1 });

    const second = await r.reconciler({}, LATER).runPass();
    expect(second.stuck.map((s) => s.action)).to.deep.equal(['job_active']);
    expect(second.summary).to.include({ repairs: 0, newFindings: 0 });
    expect(await r.queues.stop.getJobCounts('waiting')).to.deep.equal({ waiting: 1 });
  });

  it('repairs an instance a failed stop left half-way with a new stop, leaving the failed one failed; the stop then completes', async () => {
    const a = await abandonedStop('stalled');
    const jobId = jobIds.operation(a.opId);
    await r.queues.stop.add('stop', { operationId: a.opId, agentId: a.agentId }, { jobId, attempts: 1 });
    // A worker that dies mid-job the way BullMQ reports it: the job fails, nothing touches the rows.
    const dying = new Worker('stop', async () => {
      throw new UnrecoverableError('job stalled more than allowable limit');
    }, { connection: r.connection, prefix: r.prefix });
    try {
      await waitFor(async () => (await stateOf(await r.queues.stop.getJob(jobId))) === 'failed');
    } finally {
      await dying.close();
    }
    await transition(r.h.ds, { entity: 'operation', id: a.opId, from: ['running'], to: 'failed', reason: 'test: job failed in the queue' });

    const report = await r.reconciler({}, LATER).runPass();

    expect(report.stuck.map((s) => s.action)).to.deep.equal(['requeued']);
    expect(report.stuck[0]!.detail).to.contain('failed for good');
    // A final state is final: the failed stop stays failed and its job stays failed.
    expect((await operationOf(r, a.opId)).status).to.equal('failed');
    expect(await (await r.queues.stop.getJob(jobId))!.getState()).to.equal('failed');
    const repair = report.stuck[0]!.operationId!;
    expect(repair).to.not.equal(a.opId);
    expect(await operationOf(r, repair)).to.deep.include({ type: 'stop', status: 'queued', requestedBy: 'system' });
    // A second pass does not ask again.
    expect((await r.reconciler({}, LATER).runPass()).stuck.map((s) => s.operationId)).to.deep.equal([repair]);

    // A healthy worker picks the new stop up and the workflow finishes it from `stopping`.
    const healthy = new Worker('stop', async (j) => r.h.power.stop(j.data.agentId, { operationId: j.data.operationId }), {
      connection: r.connection,
      prefix: r.prefix,
    });
    try {
      await waitFor(async () => (await instanceOf(r, a.instanceId)).status === 'stopped');
    } finally {
      await healthy.close();
    }
  });

  it('does not retry a provision that failed for good: that is the rollback’s to clean up', async () => {
    // A provision that created its server and then died for good: instance provisioning, job failed.
    const a = await newAgent(r.h, 'failed-provision');
    await transition(r.h.ds, { entity: 'instance', id: a.instanceId, from: ['pending'], to: 'provisioning', reason: 'test: provision began' });
    await transition(r.h.ds, { entity: 'provisioning_job', id: a.provisioningJobId, from: ['queued'], to: 'running', reason: 'test: provision began' });
    await r.simApi('POST', '/servers', {
      name: 'failed-provision-box',
      status: 'running',
      labels: serverLabels(r.h.fleet, { agentId: a.agentId, provisioningJobId: a.provisioningJobId, instanceId: a.instanceId }),
    });
    const jobId = jobIds.operation(a.provisionOperationId);
    await r.queues.provision.add(
      'provision',
      { operationId: a.provisionOperationId, agentId: a.agentId, instanceId: a.instanceId, provisioningJobId: a.provisioningJobId },
      { jobId, attempts: 1 },
    );
    const dying = new Worker('provision', async () => {
      throw new UnrecoverableError('boom');
    }, { connection: r.connection, prefix: r.prefix });
    try {
      await waitFor(async () => (await stateOf(await r.queues.provision.getJob(jobId))) === 'failed');
    } finally {
      await dying.close();
    }

    const report = await r.reconciler({}, LATER).runPass();

    expect(report.stuck.map((s) => [s.status, s.action])).to.deep.equal([['provisioning', 'awaiting_rollback']]);
    expect(await stateOf(await r.queues.provision.getJob(jobId))).to.equal('failed');
    expect(report.summary.repairs).to.equal(0);
    // Its server is vouched for by the provisioning job still marked running: not an orphan.
    expect(report.orphanServers).to.deep.equal([]);
    expect(report.summary.inFlight).to.equal(1);
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) expect.fail(`condition not met within ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 20));
  }
}
