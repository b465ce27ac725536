import { expect } from 'chai';
import { AGENT_LABEL, JOB_LABEL } from '../../src/fleet/server-labels';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type Suite } from './stack';

// A provision that fails for good is rolled back by itself, exactly once — by the listener when a
// worker sees the failure, by the sweep of the next start-up when nobody did.

describe('pipeline: failed provisions are rolled back', function () {
  this.timeout(60_000);

  let suite: Suite;
  const running: Tailfleet[] = [];

  before(async () => {
    suite = await createSuite('pipeline_rollback');
  });

  afterEach(async () => {
    await Promise.all(running.splice(0).map((tf) => tf.stop()));
    suite.sim.control.clearFaults();
  });

  after(async () => {
    await suite?.close();
  });

  async function launch(overrides: Parameters<Suite['launch']>[0] = {}) {
    const tf = await suite.launch(overrides);
    running.push(tf);
    return tf;
  }

  async function createAgent(tf: Tailfleet, name: string) {
    const res = await apiClient(tf.url!, suite.apiToken).post('/v1/agents', { name });
    expect(res.status).to.equal(201);
    return {
      agentId: res.body.agent.id as string,
      operationId: res.body.operation.id as string,
      provisioningJobId: res.body.provisioningJob.id as string,
    };
  }

  // Reads go through the suite's own connection, so they work while no tailfleet runs.
  const row = async (_tf: Tailfleet | null, sql: string, params: unknown[]) =>
    ((await suite.db.dataSource.query(sql, params)) as any[])[0];

  async function rollbackFinished(tf: Tailfleet, provisioningJobId: string) {
    return waitFor(
      'the rollback to finish',
      async () => {
        const r = await row(tf, `SELECT status FROM provisioning_jobs WHERE id = $1`, [provisioningJobId]);
        const op = await row(tf, `SELECT status FROM operations WHERE provisioning_job_id = $1 AND type = 'rollback'`, [
          provisioningJobId,
        ]);
        return r?.status === 'rolled_back' && op?.status === 'succeeded';
      },
      { timeoutMs: 20_000 },
    );
  }

  /** One rollback Operation, one rollback queue job, everything cleaned, agent error, instance failed. */
  async function expectRolledBackOnce(tf: Tailfleet, ids: { agentId: string; provisioningJobId: string; operationId: string }) {
    const provision = await row(tf, `SELECT status, attempts, error FROM operations WHERE id = $1`, [ids.operationId]);
    expect(provision.status).to.equal('failed');

    const rollbacks: any[] = await suite.db.dataSource.query(
      `SELECT id, status, queue_job_id FROM operations WHERE provisioning_job_id = $1 AND type = 'rollback'`,
      [ids.provisioningJobId],
    );
    expect(rollbacks).to.have.length(1);
    expect(rollbacks[0].status).to.equal('succeeded');
    expect(rollbacks[0].queue_job_id).to.equal(`rollback-${ids.provisioningJobId}`);

    const counts = await tf.queues.rollback.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed');
    const jobs = await tf.queues.rollback.getJobs(['completed', 'failed', 'active', 'waiting', 'delayed']);
    expect(jobs.filter((j) => j.data.provisioningJobId === ids.provisioningJobId).map((j) => j.id)).to.deep.equal([
      `rollback-${ids.provisioningJobId}`,
    ]);
    expect(counts.failed).to.equal(0);

    const agent = await row(tf, `SELECT status FROM agents WHERE id = $1`, [ids.agentId]);
    expect(agent.status).to.equal('error');
    const instance = await row(tf, `SELECT status, error FROM instances WHERE agent_id = $1`, [ids.agentId]);
    expect(instance.status).to.equal('failed');
    expect(instance.error).to.match(/^Rolled back after provision failure\. Cleaned: Hetzner=(true|false), Tailscale=(true|false)$/);

    const state = suite.sim.control.state();
    expect(state.servers.filter((s) => s.labels[AGENT_LABEL] === ids.agentId)).to.deep.equal([]);
    return { provision, state };
  }

  it('listener: a provision failing every attempt is rolled back by itself, once', async () => {
    const tf = await launch();
    suite.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 503 }]);

    const ids = await createAgent(tf, 'doomed-1');
    await rollbackFinished(tf, ids.provisioningJobId);
    const { provision, state } = await expectRolledBackOnce(tf, ids);
    expect(provision.attempts).to.equal(3);
    expect(state.servers).to.deep.equal([]);
    expect(state.devices).to.deep.equal([]);

    const pj = await row(tf, `SELECT failed_step FROM provisioning_jobs WHERE id = $1`, [ids.provisioningJobId]);
    expect(pj.failed_step).to.equal('create-server');
    // All three attempts reached the cloud; none of them was swallowed.
    expect(suite.sim.control.requestCounts()['POST /hetzner/v1/servers']).to.be.at.least(3);
  });

  it('listener: a server the failed provision left behind is deleted', async () => {
    const tf = await launch();
    // The server gets created, but its status can never be read: every attempt fails after creation.
    suite.sim.control.setFaults([{ method: 'GET', route: '/hetzner/v1/servers/{id}', status: 503 }]);

    const ids = await createAgent(tf, 'doomed-2');
    await waitFor('a server to exist', async () => suite.sim.control.state().servers.length === 1);
    await rollbackFinished(tf, ids.provisioningJobId);
    const { state } = await expectRolledBackOnce(tf, ids);
    expect(state.servers).to.deep.equal([]);
    expect(state.devices).to.deep.equal([]);
    const instance = await row(tf, `SELECT error FROM instances WHERE agent_id = $1`, [ids.agentId]);
    expect(instance.error).to.include('Hetzner=true');
  });

  it('sweep: a failure nobody listened to is rolled back at the next start-up', async () => {
    const deaf = await launch({ overrides: { rollbackListener: false } });
    expect(deaf.rollbackListener).to.equal(undefined);
    suite.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 503 }]);

    const ids = await createAgent(deaf, 'doomed-3');
    await waitFor('the provision to fail for good', async () => {
      const pj = await row(deaf, `SELECT status FROM provisioning_jobs WHERE id = $1`, [ids.provisioningJobId]);
      const job = await deaf.queues.provision.getJob(`op-${ids.operationId}`);
      return pj.status === 'failed' && (await job?.isFailed());
    });
    await deaf.stop();
    running.splice(running.indexOf(deaf), 1);

    // Nothing rolled it back while no listener ran.
    const before = await row(null, `SELECT count(*)::int AS n FROM operations WHERE provisioning_job_id = $1 AND type = 'rollback'`, [
      ids.provisioningJobId,
    ]);
    expect(before.n).to.equal(0);

    suite.sim.control.clearFaults();
    const next = await launch();
    await rollbackFinished(next, ids.provisioningJobId);
    await expectRolledBackOnce(next, ids);

    // Sweeping again finds nothing new: the rollback stays exactly once.
    const again = await next.rollbackListener!.sweep();
    expect(again.created).to.deep.equal([]);
    const n = await row(next, `SELECT count(*)::int AS n FROM operations WHERE provisioning_job_id = $1 AND type = 'rollback'`, [
      ids.provisioningJobId,
    ]);
    expect(n.n).to.equal(1);
  });

  it('sweep: a provision operation failed but its provisioning job left running is completed and rolled back', async () => {
    const tf = await launch({ overrides: { rollbackListener: false } });
    const ids = await createAgent(tf, 'half-recorded');
    await waitFor('the provision to finish', async () => {
      const op = await row(tf, `SELECT status FROM operations WHERE id = $1`, [ids.operationId]);
      return op.status === 'succeeded';
    });
    // A provision that succeeded is never rolled back by the sweep…
    const none = await launch({ overrides: { rollbackListener: true } });
    const swept = await none.rollbackListener!.sweep();
    expect(swept.requested).to.not.include(ids.provisioningJobId);

    // …but the state a crash between the two writes leaves (operation failed, job still running) is.
    const ids2 = await createAgent(tf, 'half-recorded-2');
    await waitFor('the second provision to finish', async () => {
      const op = await row(tf, `SELECT status FROM operations WHERE id = $1`, [ids2.operationId]);
      return op.status === 'succeeded';
    });
    // Failed a while ago: the sweep leaves a fresh failure alone for two minutes, in case it was a
    // delivery that lost a race to another one still finishing the work.
    await suite.db.dataSource.query(
      `UPDATE operations SET status = 'failed', error = 'simulated crash', finished_at = now() - interval '3 minutes' WHERE id = $1`,
      [ids2.operationId],
    );
    await suite.db.dataSource.query(`UPDATE provisioning_jobs SET status = 'running' WHERE id = $1`, [ids2.provisioningJobId]);
    await suite.db.dataSource.query(`UPDATE instances SET status = 'provisioning' WHERE agent_id = $1`, [ids2.agentId]);
    await suite.db.dataSource.query(`UPDATE agents SET status = 'provisioning' WHERE id = $1`, [ids2.agentId]);

    const result = await none.rollbackListener!.sweep();
    expect(result.created).to.deep.equal([ids2.provisioningJobId]);
    await rollbackFinished(tf, ids2.provisioningJobId);
    const instance = await row(tf, `SELECT status, error FROM instances WHERE agent_id = $1`, [ids2.agentId]);
    expect(instance.status).to.equal('failed');
    expect(instance.error).to.equal('Rolled back after provision failure. Cleaned: Hetzner=true, Tailscale=true');
    expect(suite.sim.control.state().servers.filter((s) => s.labels[JOB_LABEL] === ids2.provisioningJobId)).to.deep.equal(
      [],
    );
  });
});
