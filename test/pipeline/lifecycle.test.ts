import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from './stack';

// The whole path, really exercised: HTTP API → BullMQ (real Redis) → processors → lifecycle service →
// clients → the simulator over HTTP, with state in a real PostgreSQL database.

describe('pipeline: agent lifecycle end to end', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;

  before(async () => {
    suite = await createSuite('pipeline_lifecycle');
    tf = await suite.launch();
    api = apiClient(tf.url!, suite.apiToken);
  });

  after(async () => {
    await suite?.close();
  });

  const operationDone = (operationId: string) =>
    waitFor(`operation ${operationId} to finish`, async () => {
      const res = await api.get(`/v1/operations/${operationId}`);
      expect(res.status).to.equal(200);
      const status = res.body.operation.status;
      return status === 'succeeded' || status === 'failed' ? res.body : undefined;
    });

  let agentId: string;
  let serverId: number;
  let deviceId: string;

  it('provisions an agent created through the API', async () => {
    const created = await api.post('/v1/agents', { name: 'builder-1' });
    expect(created.status).to.equal(201);
    agentId = created.body.agent.id;

    const done = await operationDone(created.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');
    expect(done.operation.progress).to.equal(100);
    expect(done.operation.attempts).to.equal(1);

    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance.status).to.equal('running');
    serverId = Number(agent.body.instance.serverId);
    deviceId = agent.body.instance.tailscaleDeviceId;
    expect(serverId).to.be.greaterThan(0);
    expect(deviceId).to.be.a('string').with.length.greaterThan(0);

    const state = suite.sim.control.state();
    expect(state.servers.map((s) => [s.id, s.status])).to.deep.equal([[serverId, 'running']]);
    expect(state.devices.map((d) => d.id)).to.deep.equal([deviceId]);
    expect(state.servers[0]!.labels).to.include({ 'managed-by': 'tailfleet' });
  });

  it('shows progress and a log in the BullMQ job', async () => {
    const agent = await api.get(`/v1/agents/${agentId}`);
    const ops = await tf.dataSource.query(`SELECT queue_job_id FROM operations WHERE agent_id = $1 AND type = 'provision'`, [
      agent.body.agent.id,
    ]);
    const job = await waitFor('the provision job to complete', async () => {
      const j = await tf.queues.provision.getJob(ops[0].queue_job_id);
      return (await j?.isCompleted()) ? j : undefined;
    });
    expect(job.progress).to.deep.include({ percent: 100 });
    const { logs } = await tf.queues.provision.getJobLogs(job.id!);
    expect(logs.some((l) => l.includes('[create-server]'))).to.equal(true);
    expect(logs.at(-1)).to.include('succeeded');
  });

  it('stops the agent, and refuses to stop it twice', async () => {
    const res = await api.post(`/v1/agents/${agentId}/stop`);
    expect(res.status).to.equal(202);
    const done = await operationDone(res.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('paused');
    expect(agent.body.instance.status).to.equal('stopped');
    expect(suite.sim.control.state().servers.find((s) => s.id === serverId)?.status).to.equal('off');

    const again = await api.post(`/v1/agents/${agentId}/stop`);
    expect(again.status).to.equal(409);
  });

  it('starts it again', async () => {
    const res = await api.post(`/v1/agents/${agentId}/start`);
    expect(res.status).to.equal(202);
    const done = await operationDone(res.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance.status).to.equal('running');
    expect(suite.sim.control.state().servers.find((s) => s.id === serverId)?.status).to.equal('running');
  });

  it('destroys it: server and tailnet device gone', async () => {
    const res = await api.post(`/v1/agents/${agentId}/destroy`);
    expect(res.status).to.equal(202);
    const done = await operationDone(res.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('destroyed');
    const state = suite.sim.control.state();
    expect(state.servers).to.deep.equal([]);
    expect(state.devices).to.deep.equal([]);
  });

  it('records job outcomes in the metrics', async () => {
    // Counted once the runner has finished with the job, a moment after the Operation says so.
    const line = (queue: string) => new RegExp(`tailfleet_jobs_total\\{queue="${queue}",outcome="completed"\\} 1`);
    const text = await waitFor('every job to be counted', async () => {
      const t = await tf.metrics.registry.getSingleMetricAsString('tailfleet_jobs_total');
      return ['provision', 'stop', 'start', 'destroy'].every((q) => line(q).test(t)) ? t : undefined;
    });
    expect(text).to.not.match(/outcome="(failed|retried)"/);
  });
});
