import { expect } from 'chai';
import { waitFor } from './stack';
import { launchedSuite, operationEnded } from '../helpers/launched';

// The whole path, really exercised: HTTP API → BullMQ (real Redis) → processors → lifecycle service →
// clients → the simulator over HTTP, with state in a real PostgreSQL database.

describe('pipeline: agent lifecycle end to end', function () {
  this.timeout(60_000);

  const stack = launchedSuite('pipeline_lifecycle');

  const operationDone = (operationId: string) => operationEnded(stack.api, operationId);

  let agentId: string;
  let serverId: number;
  let deviceId: string;

  it('provisions an agent created through the API', async () => {
    const created = await stack.api.post('/v1/agents', { name: 'builder-1' });
    expect(created.status).to.equal(201);
    agentId = created.body.agent.id;

    const done = await operationDone(created.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');
    expect(done.operation.progress).to.equal(100);
    expect(done.operation.attempts).to.equal(1);

    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance.status).to.equal('running');
    serverId = Number(agent.body.instance.serverId);
    deviceId = agent.body.instance.tailscaleDeviceId;
    expect(serverId).to.be.greaterThan(0);
    expect(deviceId).to.be.a('string').with.length.greaterThan(0);

    const state = stack.suite.sim.control.state();
    expect(state.servers.map((s) => [s.id, s.status])).to.deep.equal([[serverId, 'running']]);
    expect(state.devices.map((d) => d.id)).to.deep.equal([deviceId]);
    expect(state.servers[0]!.labels).to.include({ 'managed-by': 'tailfleet' });
  });

  it('ends the provision and its operation in one transaction', async () => {
    // xmin names the transaction that wrote a row: the instance, agent and job reach their ends with the operation's success.
    const events: Array<{ entity_type: string; to_status: string; tx: string }> = await stack.tf.dataSource.query(
      `SELECT e.entity_type::text, e.to_status, e.xmin::text AS tx FROM events e
         JOIN operations o ON o.id = e.operation_id AND o.type = 'provision' AND o.agent_id = $1
        WHERE e.to_status IN ('running', 'active', 'succeeded') AND e.from_status IS NOT NULL AND e.from_status <> 'queued'`,
      [agentId],
    );
    expect(events.map((e) => `${e.entity_type}:${e.to_status}`).sort()).to.deep.equal([
      'agent:active',
      'instance:running',
      'operation:succeeded',
      'provisioning_job:succeeded',
    ]);
    expect(new Set(events.map((e) => e.tx)).size).to.equal(1);
  });

  it('shows progress and a log in the BullMQ job', async () => {
    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    const ops = await stack.tf.dataSource.query(`SELECT queue_job_id FROM operations WHERE agent_id = $1 AND type = 'provision'`, [
      agent.body.agent.id,
    ]);
    const job = await waitFor('the provision job to complete', async () => {
      const j = await stack.tf.queues.provision.getJob(ops[0].queue_job_id);
      return (await j?.isCompleted()) ? j : undefined;
    });
    expect(job.progress).to.deep.include({ percent: 100 });
    const { logs } = await stack.tf.queues.provision.getJobLogs(job.id!);
    expect(logs.some((l) => l.includes('[create-server]'))).to.equal(true);
    expect(logs.at(-1)).to.include('succeeded');
  });

  it('stops the agent, and refuses to stop it twice', async () => {
    const res = await stack.api.post(`/v1/agents/${agentId}/stop`);
    expect(res.status).to.equal(202);
    const done = await operationDone(res.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('paused');
    expect(agent.body.instance.status).to.equal('stopped');
    expect(stack.suite.sim.control.state().servers.find((s) => s.id === serverId)?.status).to.equal('off');

    const again = await stack.api.post(`/v1/agents/${agentId}/stop`);
    expect(again.status).to.equal(409);
  });

  it('starts it again', async () => {
    const res = await stack.api.post(`/v1/agents/${agentId}/start`);
    expect(res.status).to.equal(202);
    const done = await operationDone(res.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance.status).to.equal('running');
    expect(stack.suite.sim.control.state().servers.find((s) => s.id === serverId)?.status).to.equal('running');
  });

  it('destroys it: server and tailnet device gone', async () => {
    const res = await stack.api.post(`/v1/agents/${agentId}/destroy`);
    expect(res.status).to.equal(202);
    const done = await operationDone(res.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('destroyed');
    const state = stack.suite.sim.control.state();
    expect(state.servers).to.deep.equal([]);
    expect(state.devices).to.deep.equal([]);
  });

  it('records job outcomes in the metrics', async () => {
    // Counted once the runner has finished with the job, a moment after the Operation says so.
    const line = (queue: string) => new RegExp(`tailfleet_jobs_total\\{queue="${queue}",outcome="completed"\\} 1`);
    const text = await waitFor('every job to be counted', async () => {
      const t = await stack.tf.metrics.registry.getSingleMetricAsString('tailfleet_jobs_total');
      return ['provision', 'stop', 'start', 'destroy'].every((q) => line(q).test(t)) ? t : undefined;
    });
    expect(text).to.not.match(/outcome="(failed|retried)"/);
  });
});
