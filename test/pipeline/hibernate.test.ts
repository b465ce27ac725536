import { expect } from 'chai';
import { waitFor } from './stack';
import { launchedSuite, operationEnded } from '../helpers/launched';

// Hibernate and wake the whole way: HTTP API → ledger → hibernate/wake queues → workers → the
// simulator over HTTP; and what the fleet costs before and after.

describe('pipeline: hibernate, wake and what the fleet costs', function () {
  this.timeout(60_000);

  // A tenth of a second of pause is "long" here, so the reconcile pass hibernates paused agents.
  const stack = launchedSuite('pipeline_hibernate', { env: { RECONCILE_INTERVAL_SECONDS: '0', AUTO_HIBERNATE_AFTER_HOURS: '0.00003', POLICY_INTERVAL_SECONDS: '1' } });

  const finished = async (operationId: string) => (await operationEnded(stack.api, operationId)).operation;

  async function command(agentId: string, verb: string) {
    const res = await stack.api.post(`/v1/agents/${agentId}/${verb}`);
    expect(res.status, JSON.stringify(res.body)).to.equal(202);
    const op = await finished(res.body.operation.id);
    expect(op.status, op.error).to.equal('succeeded');
    return op;
  }

  /** Runs the command to success; answers it and the agent as the API shows it after, in the statuses expected. */
  async function commandTo(agentId: string, verb: string, expected: { agent: string; instance: string }) {
    const op = await command(agentId, verb);
    const view = (await stack.api.get(`/v1/agents/${agentId}`)).body;
    expect({ agent: view.agent.status, instance: view.instance.status }).to.deep.equal(expected);
    return { op, view };
  }

  async function newAgent(name: string) {
    const created = await stack.api.post('/v1/agents', { name });
    expect(created.status).to.equal(201);
    const op = await finished(created.body.operation.id);
    expect(op.status, op.error).to.equal('succeeded');
    return created.body.agent.id as string;
  }

  const ofAgent = (agentId: string) => {
    const state = stack.suite.sim.control.state();
    return {
      servers: state.servers.filter((s) => s.labels['tailfleet-agent'] === agentId),
      images: state.images.filter((i) => i.labels['tailfleet-agent'] === agentId),
      devices: state.devices,
    };
  };

  async function prices() {
    const token = 'sim-token';
    const get = async (path: string) => (await fetch(`${stack.suite.sim.hetznerUrl}${path}`, { headers: { authorization: `Bearer ${token}` } })).json() as Promise<any>;
    const pricing = (await get('/pricing')).pricing;
    const cx22 = (await get('/server_types?name=cx22')).server_types[0];
    const at = (list: Array<{ location: string; price_monthly: { gross: string } }>) => Number(list.find((p) => p.location === 'fsn1')!.price_monthly.gross);
    return {
      server: at(cx22.prices),
      ipv4: at(pricing.primary_ips.find((p: { type: string }) => p.type === 'ipv4').prices),
      perGb: Number(pricing.image.price_per_gb_month.gross),
    };
  }

  it('hibernates: no server, one snapshot, the device kept; the fleet cost falls by the server less the snapshot', async () => {
    const agentId = await newAgent('sleeper-1');
    const before = await stack.api.get(`/v1/agents/${agentId}`);
    const deviceId = before.body.instance.tailscaleDeviceId;
    const tailnetIp = before.body.instance.tailscaleIp;
    const p = await prices();
    expect(before.body.agent.cost).to.deep.equal({ currency: 'EUR', monthly: Math.round((p.server + p.ipv4) * 1e4) / 1e4, server: p.server, primaryIpv4: p.ipv4, snapshot: 0 });
    const costBefore = (await stack.api.get('/v1/fleet/cost')).body;
    expect(costBefore.currency).to.equal('EUR');

    const { op, view: after } = await commandTo(agentId, 'hibernate', { agent: 'hibernated', instance: 'hibernated' });
    expect(op.type).to.equal('hibernate');
    expect(after.instance.serverId).to.equal(null);
    const cloud = ofAgent(agentId);
    expect(cloud.servers).to.have.length(0);
    expect(cloud.images).to.have.length(1);
    const device = cloud.devices.find((d) => d.id === deviceId)!;
    expect(device.addresses[0]).to.equal(tailnetIp);
    expect(device.connectedToControl).to.equal(false);

    const snapshot = cloud.images[0]!.image_size! * p.perGb;
    expect(after.agent.cost.snapshot).to.be.closeTo(snapshot, 1e-4);
    expect(after.agent.cost.monthly).to.be.closeTo(snapshot, 1e-4);
    const costAfter = (await stack.api.get('/v1/fleet/cost')).body;
    expect(costBefore.monthly.total - costAfter.monthly.total).to.be.closeTo(p.server + p.ipv4 - snapshot, 1e-3);
    expect(costAfter.monthly.byStatus.hibernated).to.be.closeTo(snapshot, 1e-4);
    expect(costAfter.monthly.hibernationSaving - costBefore.monthly.hibernationSaving).to.be.closeTo(p.server + p.ipv4 - snapshot, 1e-3);

    // Asleep, it cannot be stopped, started or hibernated again; it can be woken.
    for (const verb of ['stop', 'start', 'hibernate']) expect((await stack.api.post(`/v1/agents/${agentId}/${verb}`)).status).to.equal(409);

    const { op: wake, view: awake } = await commandTo(agentId, 'wake', { agent: 'active', instance: 'running' });
    expect(wake.currentStep).to.equal('done');
    expect(awake.instance.tailscaleDeviceId).to.equal(deviceId);
    expect(awake.instance.tailscaleIp).to.equal(tailnetIp);
    const woken = ofAgent(agentId);
    expect(woken.servers.map((s) => String(s.id))).to.deep.equal([awake.instance.serverId]);
    expect(woken.images).to.have.length(0);
    expect(woken.devices.find((d) => d.id === deviceId)!.connectedToControl).to.equal(true);
    expect((await stack.api.post(`/v1/agents/${agentId}/wake`)).status).to.equal(409);
  });

  it('wakes into a fresh join when the device was removed, and the operation says so', async () => {
    const agentId = await newAgent('sleeper-2');
    const deviceId = (await stack.api.get(`/v1/agents/${agentId}`)).body.instance.tailscaleDeviceId;
    await command(agentId, 'hibernate');
    stack.suite.sim.control.deleteDevice(deviceId);
    const wake = await command(agentId, 'wake');
    expect(wake.currentStep).to.equal('rejoined');
    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    expect(agent.body.instance.tailscaleDeviceId).to.be.a('string').and.not.equal(deviceId);
    const events = (await stack.api.get(`/v1/agents/${agentId}/events`)).body.items.map((e: { reason: string }) => e.reason);
    expect(events.some((r: string) => r.includes('joining the tailnet again with a new auth key'))).to.equal(true);
  });

  it('destroys a hibernated agent: snapshot and device deleted', async () => {
    const agentId = await newAgent('sleeper-3');
    const deviceId = (await stack.api.get(`/v1/agents/${agentId}`)).body.instance.tailscaleDeviceId;
    await command(agentId, 'hibernate');
    await command(agentId, 'destroy');
    const cloud = ofAgent(agentId);
    expect([cloud.servers.length, cloud.images.length]).to.deep.equal([0, 0]);
    expect(cloud.devices.some((d) => d.id === deviceId)).to.equal(false);
    expect((await stack.api.get(`/v1/agents/${agentId}`)).body.agent.cost.monthly).to.equal(0);
  });

  it('auto-hibernates an agent paused longer than AUTO_HIBERNATE_AFTER_HOURS, as an operation by system with its reason', async () => {
    const agentId = await newAgent('sleeper-4');
    const potential = (await stack.api.get('/v1/fleet/cost')).body.monthly.potentialSaving;
    await command(agentId, 'stop');
    expect((await stack.api.get('/v1/fleet/cost')).body.monthly.potentialSaving).to.be.greaterThan(potential);
    // The policy loop (every POLICY_INTERVAL_SECONDS) asks for it once the agent has been paused long enough.
    const ops = await waitFor('a hibernate operation', async () => {
      const list = await stack.api.get(`/v1/operations?agentId=${agentId}&type=hibernate`);
      return list.body.items.length > 0 ? list.body.items : undefined;
    });
    expect(ops).to.have.length(1);
    const op = await finished(ops[0].id);
    expect(op.status, op.error).to.equal('succeeded');
    const detail = await stack.tf.dataSource.query(`SELECT requested_by FROM operations WHERE id = $1`, [op.id]);
    expect(detail[0].requested_by).to.equal('system');
    expect(op.reason).to.match(/^paused since .* \(AUTO_HIBERNATE_AFTER_HOURS\)$/);
    expect((await stack.api.get(`/v1/agents/${agentId}`)).body.agent.status).to.equal('hibernated');
  });

  it('refuses hibernate and wake for an unknown agent and a malformed id', async () => {
    expect((await stack.api.post('/v1/agents/00000000-0000-4000-8000-000000000000/hibernate')).status).to.equal(404);
    expect((await stack.api.post('/v1/agents/nope/wake')).status).to.equal(400);
  });
});
