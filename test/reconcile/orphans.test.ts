import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import sinon from 'sinon';
import { transition } from '../../src/db/transitions';
import { jobIds } from '../../src/queues/queues';
import { MANAGED_LABEL, serverLabels } from '../../src/fleet/server-labels';
import { newAgent } from '../helpers/lifecycle';
import { requestCounts, startReconcileHarness, type ReconcileHarness } from './harness';

const MANAGED = { [MANAGED_LABEL.key]: MANAGED_LABEL.value };
const HOUR_LATER = () => Date.now() + 3600_000;

describe('reconcile: orphan servers and devices', function () {
  this.timeout(25_000);
  let r: ReconcileHarness;

  before(async () => {
    r = await startReconcileHarness('reconcile_orphans');
  });
  after(async () => {
    await r?.close();
  });
  beforeEach(async () => {
    await r.reset();
  });

  /** A fleet with one of everything the sweeper must tell apart. */
  async function mixedFleet() {
    const owned = await r.agent('owned');
    const { server: orphan } = await r.simApi('POST', '/servers', {
      name: 'crashed-provision',
      status: 'running',
      labels: { ...MANAGED, 'tailfleet-job': randomUUID() },
    });
    const { device: orphanDevice } = await r.simApi('POST', '/devices', { hostname: 'crashed-provision', tags: ['tag:agent'] });
    const { server: unlabelled } = await r.simApi('POST', '/servers', { name: 'hand-made', status: 'running', labels: {} });
    const { server: foreign } = await r.simApi('POST', '/servers', {
      name: 'someone-elses',
      status: 'running',
      labels: { [MANAGED_LABEL.key]: 'terraform' },
    });
    const { device: laptop } = await r.simApi('POST', '/devices', { hostname: 'my-laptop' });
    // A provision in flight: server created, id not recorded yet.
    const inFlight = await newAgent(r.h, 'in-flight');
    await transition(r.h.ds, { entity: 'instance', id: inFlight.instanceId, from: ['pending'], to: 'provisioning', reason: 'test: provision began' });
    await transition(r.h.ds, { entity: 'provisioning_job', id: inFlight.provisioningJobId, from: ['queued'], to: 'running', reason: 'test: provision began' });
    await r.queues.provision.add(
      'provision',
      { operationId: inFlight.provisionOperationId, agentId: inFlight.agentId, instanceId: inFlight.instanceId, provisioningJobId: inFlight.provisioningJobId },
      { jobId: jobIds.operation(inFlight.provisionOperationId) },
    );
    const { server: inFlightServer } = await r.simApi('POST', '/servers', {
      name: 'in-flight-box',
      status: 'initializing',
      labels: serverLabels(r.h.fleet, { agentId: inFlight.agentId, provisioningJobId: inFlight.provisioningJobId, instanceId: inFlight.instanceId }),
    });
    return { owned, orphan, orphanDevice, unlabelled, foreign, laptop, inFlightServer };
  }

  const serverIds = () => r.h.sim.control.state().servers.map((s) => s.id);
  const deviceIds = () => r.h.sim.control.state().devices.map((d) => d.id);

  it('reports orphans older than the grace period and deletes nothing by default', async () => {
    const f = await mixedFleet();
    const before = { servers: serverIds(), devices: deviceIds() };

    const young = await r.reconciler({ graceSeconds: 900 }).runPass();
    expect(young.orphanServers).to.deep.equal([]);
    expect(young.orphanDevices).to.deep.equal([]);
    expect(young.summary).to.include({ withinGrace: 2, inFlight: 1 });

    const report = await r.reconciler({ graceSeconds: 900 }, HOUR_LATER).runPass();
    expect(report.orphanServers.map((o) => [o.serverId, o.action])).to.deep.equal([[String(f.orphan.id), 'reported']]);
    expect(report.orphanServers[0]!.ageSeconds).to.be.at.least(3600);
    expect(report.orphanDevices.map((o) => [o.deviceId, o.action])).to.deep.equal([[f.orphanDevice.id, 'reported']]);
    expect(report.stuck.map((x) => x.action)).to.deep.equal(['job_active']);
    expect(report.summary).to.include({ orphanServers: 1, orphanDevices: 1, inFlight: 1, repairs: 0, newFindings: 2 });
    // The listing only ever asks for tailfleet's label.
    expect(report.observed.servers).to.equal(3);
    expect({ servers: serverIds(), devices: deviceIds() }).to.deep.equal(before);

    const again = await r.reconciler({ graceSeconds: 900 }, HOUR_LATER).runPass();
    expect(again.summary).to.include({ orphanServers: 1, orphanDevices: 1, newFindings: 0 });
  });

  it('deletes orphans under RECONCILE_ORPHANS=delete and nothing else; a second pass finds nothing', async () => {
    const f = await mixedFleet();

    const report = await r.reconciler({ orphans: 'delete' }).runPass();

    expect(report.orphanServers.map((o) => [o.serverId, o.action])).to.deep.equal([[String(f.orphan.id), 'deleted']]);
    expect(report.orphanDevices.map((o) => [o.deviceId, o.action])).to.deep.equal([[f.orphanDevice.id, 'deleted']]);
    expect(report.summary.repairs).to.equal(2);
    expect(serverIds()).to.not.include(f.orphan.id);
    expect(deviceIds()).to.not.include(f.orphanDevice.id);
    // Unlabelled, foreign-labelled, owned and in-flight servers are all still there, untouched.
    expect(serverIds()).to.include.members([f.unlabelled.id, f.foreign.id, f.inFlightServer.id, Number(f.owned.serverId)]);
    expect(deviceIds()).to.include.members([f.laptop.id, f.owned.deviceId]);
    expect(requestCounts(r)['DELETE /hetzner/v1/servers/{id}']).to.equal(1);
    for (const id of [f.unlabelled.id, f.foreign.id]) {
      expect(r.h.sim.control.state().servers.find((s) => s.id === id)!.status).to.equal('running');
    }

    const second = await r.reconciler({ orphans: 'delete' }).runPass();
    expect(second.orphanServers).to.deep.equal([]);
    expect(second.orphanDevices).to.deep.equal([]);
    expect(second.summary).to.include({ repairs: 0, newFindings: 0 });
  });

  it('never deletes an unlabelled server, even one whose id an instance once recorded', async () => {
    const a = await r.agent('relabelled');
    // Someone strips tailfleet's label in the console and the instance is later marked failed.
    await r.simApi('PATCH', `/servers/${a.serverId}`, { labels: { team: 'ops' } });
    const report = await r.reconciler({ orphans: 'delete' }).runPass();
    // The instance still owns its (now unlabelled) server: state agrees, nothing to do.
    expect(report.drift).to.deep.equal([]);
    expect(report.observed.servers).to.equal(0);
    await transition(r.h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'failed', reason: 'test: lost' });

    const after = await r.reconciler({ orphans: 'delete' }).runPass();
    expect(after.orphanServers).to.deep.equal([]);
    expect(serverIds()).to.include(Number(a.serverId));
    expect(requestCounts(r)['DELETE /hetzner/v1/servers/{id}'] ?? 0).to.equal(0);
  });

  it('keeps an orphan whose label was taken off between the listing and the delete', async () => {
    const { server } = await r.simApi('POST', '/servers', { name: 'claimed-by-hand', status: 'running', labels: { ...MANAGED } });
    const listServers = r.h.hetzner.listServers.bind(r.h.hetzner);
    const stub = sinon.stub(r.h.hetzner, 'listServers').callsFake(async (selector?: string) => {
      const listed = await listServers(selector);
      await r.simApi('PATCH', `/servers/${server.id}`, { labels: { team: 'ops' } });
      return listed;
    });
    try {
      const report = await r.reconciler({ orphans: 'delete' }).runPass();
      expect(report.orphanServers.map((o) => [o.serverId, o.action, o.detail])).to.deep.equal([
        [String(server.id), 'kept', 'no longer carries the managed-by label'],
      ]);
    } finally {
      stub.restore();
    }
    expect(serverIds()).to.include(server.id);
    expect(requestCounts(r)['DELETE /hetzner/v1/servers/{id}'] ?? 0).to.equal(0);
  });

  it('keeps orphans it cannot prove are its own and lists them as needing attention', async () => {
    // managed-by alone: tailfleet labels every server it makes with its agent and job.
    const { server: bare } = await r.simApi('POST', '/servers', { name: 'bare-managed', status: 'running', labels: { ...MANAGED } });
    // Tagged, but a name tailfleet never gives and no labelled server of that name.
    const { device: stranger } = await r.simApi('POST', '/devices', { hostname: 'build-cache', tags: ['tag:agent'] });

    const report = await r.reconciler({ orphans: 'delete' }).runPass();
    expect(report.orphanServers.map((o) => [o.serverId, o.action])).to.deep.equal([[String(bare.id), 'kept']]);
    expect(report.orphanDevices.map((o) => [o.deviceId, o.action])).to.deep.equal([[stranger.id, 'kept']]);
    expect(serverIds()).to.include(bare.id);
    expect(deviceIds()).to.include(stranger.id);
    expect(requestCounts(r)['DELETE /hetzner/v1/servers/{id}'] ?? 0).to.equal(0);
    expect(requestCounts(r)['DELETE /tailscale/api/v2/device/{deviceId}'] ?? 0).to.equal(0);

    // The next report lists both refusals, with what was missing; they stay open while the resources do.
    const next = await r.reconciler({ orphans: 'delete' }).runPass();
    const byId = new Map(next.attention.map((f) => [f.resourceId, f]));
    expect(byId.get(String(bare.id))).to.include({ resourceType: 'server', operation: 'reconcile', state: 'open' });
    expect(byId.get(String(bare.id))!.missing).to.deep.equal(['label tailfleet-agent or tailfleet-job (absent)']);
    expect(byId.get(stranger.id)).to.include({ resourceType: 'device', state: 'open' });
    expect(next.summary.needsAttention).to.equal(2);

    // Once someone deletes them by hand, the findings are resolved and leave the report.
    await r.simApi('DELETE', `/servers/${bare.id}`);
    await r.simApi('DELETE', `/devices/${stranger.id}`);
    const resolved = await r.reconciler({ orphans: 'delete' }).runPass();
    expect(resolved.attention.map((f) => [f.resourceId, f.state])).to.have.deep.members([
      [String(bare.id), 'resolved'],
      [stranger.id, 'resolved'],
    ]);
    expect((await r.reconciler().runPass()).attention).to.deep.equal([]);
  });

  it('refuses to mass-delete when orphans exceed the per-pass limit (wrong database?)', async () => {
    for (let i = 0; i < 3; i++) {
      await r.simApi('POST', '/servers', { name: `stray-${i}`, status: 'running', labels: { ...MANAGED } });
    }
    const report = await r.reconciler({ orphans: 'delete', maxDeletesPerPass: 2 }).runPass();
    expect(report.orphanServers.map((o) => o.action)).to.deep.equal(['kept', 'kept', 'kept']);
    expect(report.errors.join()).to.match(/exceed the limit of 2/);
    expect(serverIds()).to.have.length(3);
  });

  it('costs one request per 50 servers and one device listing, however many servers there are', async () => {
    for (let i = 0; i < 120; i++) r.h.sim.control.createServer({ name: `fleet-${i}`, status: 'running', labels: { ...MANAGED } });
    await r.h.tailscale.listDevices(); // the simulator reset revoked the cached OAuth token: renew it outside the count
    r.h.sim.control.resetRequestCounts();

    const report = await r.reconciler({ graceSeconds: 3600 }).runPass();

    expect(report.observed.servers).to.equal(120);
    expect(report.summary.withinGrace).to.equal(120);
    const counts = requestCounts(r);
    const cloudRequests = Object.entries(counts)
      .filter(([k]) => !k.includes('/oauth/'))
      .reduce((n, [, v]) => n + v, 0);
    expect(counts['GET /hetzner/v1/servers']).to.equal(3);
    expect(counts['GET /tailscale/api/v2/tailnet/{tailnet}/devices']).to.equal(1);
    expect(cloudRequests).to.equal(4);
  });
});
