import { expect } from 'chai';
import sinon from 'sinon';
import { transition } from '../../src/db/transitions';
import { jobIds } from '../../src/queues/queues';
import { newOperation } from '../helpers/lifecycle';
import { agentOf, eventsOf, instanceOf, requestCounts, startReconcileHarness, type ReconcileHarness } from './harness';

describe('reconcile: state drift', function () {
  this.timeout(20_000);
  let r: ReconcileHarness;

  before(async () => {
    r = await startReconcileHarness('reconcile_drift');
  });
  after(async () => {
    await r?.close();
  });
  beforeEach(async () => {
    await r.reset();
  });

  it('finds nothing on a fleet that matches the database, with one server page and one device listing', async () => {
    const a = await r.agent('calm-a');
    await r.agent('calm-b');
    r.h.sim.control.resetRequestCounts();

    const report = await r.reconciler().runPass({ trigger: 'schedule' });

    expect(report.drift).to.deep.equal([]);
    expect(report.stuck).to.deep.equal([]);
    expect(report.orphanServers).to.deep.equal([]);
    expect(report.orphanDevices).to.deep.equal([]);
    expect(report.summary).to.include({ repairs: 0, newFindings: 0, errors: 0 });
    expect(report.observed).to.include({ servers: 2, liveInstances: 2, taggedDevices: 2 });
    const counts = requestCounts(r);
    expect(counts['GET /hetzner/v1/servers']).to.equal(1);
    expect(counts['GET /tailscale/api/v2/tailnet/{tailnet}/devices']).to.equal(1);
    expect(counts['GET /hetzner/v1/servers/{id}'] ?? 0).to.equal(0);
    expect((await instanceOf(r, a.instanceId)).status).to.equal('running');
  });

  it('records a server powered off in the console as a stop: instance stopped, agent paused, events written', async () => {
    const a = await r.agent('off-by-hand');
    await r.simApi('PATCH', `/servers/${a.serverId}`, { status: 'off' });

    const report = await r.reconciler().runPass();

    expect(report.drift).to.have.length(1);
    expect(report.drift[0]).to.include({ kind: 'server_off', instanceId: a.instanceId, action: 'repaired', status: 'running' });
    const instance = await instanceOf(r, a.instanceId);
    expect(instance.status).to.equal('stopped');
    expect(instance.stoppedAt).to.be.instanceOf(Date);
    expect((await agentOf(r, a.agentId)).status).to.equal('paused');
    const reasons = (await eventsOf(r, a.instanceId)).filter((e) => e.reason.startsWith('reconcile:'));
    expect(reasons.map((e) => `${e.fromStatus}→${e.toStatus}`)).to.deep.equal(['running→stopping', 'stopping→stopped']);
    expect(reasons[0]!.reason).to.match(/powered off outside tailfleet/);
    expect(report.summary).to.include({ driftedInstances: 1, repairs: 1, newFindings: 1 });

    const second = await r.reconciler().runPass();
    expect(second.drift).to.deep.equal([]);
    expect(second.summary).to.include({ repairs: 0, newFindings: 0 });
  });

  it('records a server powered on in the console as a start: instance running, agent active', async () => {
    const a = await r.agent('on-by-hand');
    await r.h.power.stop(a.agentId, { operationId: await newOperation(r.h, 'stop', a.agentId) });
    expect((await instanceOf(r, a.instanceId)).status).to.equal('stopped');
    await r.simApi('PATCH', `/servers/${a.serverId}`, { status: 'running' });

    const report = await r.reconciler().runPass();

    expect(report.drift.map((d) => [d.kind, d.action])).to.deep.equal([['server_running', 'repaired']]);
    const instance = await instanceOf(r, a.instanceId);
    expect(instance.status).to.equal('running');
    expect(instance.stoppedAt).to.equal(null);
    expect((await agentOf(r, a.agentId)).status).to.equal('active');
    expect((await r.reconciler().runPass()).summary.newFindings).to.equal(0);
  });

  it('fails an instance whose server was deleted in the console, with a clear error, and reports its device', async () => {
    const a = await r.agent('deleted-by-hand');
    const other = await r.agent('bystander');
    await r.simApi('DELETE', `/servers/${a.serverId}`);

    const report = await r.reconciler().runPass();

    expect(report.drift.map((d) => [d.kind, d.instanceId, d.action])).to.deep.equal([
      ['server_gone', a.instanceId, 'repaired'],
    ]);
    const instance = await instanceOf(r, a.instanceId);
    expect(instance.status).to.equal('failed');
    expect(instance.error).to.match(new RegExp(`Server ${a.serverId} no longer exists at Hetzner`));
    expect((await agentOf(r, a.agentId)).status).to.equal('error');
    // The lost machine's tailnet device now belongs to no live instance: an orphan, reported (not deleted).
    expect(report.orphanDevices.map((d) => [d.deviceId, d.action])).to.deep.equal([[a.deviceId, 'reported']]);
    expect(r.h.sim.control.state().devices.map((d) => d.id)).to.include(a.deviceId);
    expect((await instanceOf(r, other.instanceId)).status).to.equal('running');
    // One read confirmed the server is gone before anything was recorded.
    expect(requestCounts(r)['GET /hetzner/v1/servers/{id}']).to.be.at.least(1);

    const second = await r.reconciler().runPass();
    expect(second.drift).to.deep.equal([]);
    expect(second.orphanDevices.map((d) => d.deviceId)).to.deep.equal([a.deviceId]);
    expect(second.orphanDevices[0]!.firstSeenAt).to.equal(report.orphanDevices[0]!.firstSeenAt);
    expect(second.summary).to.include({ repairs: 0, newFindings: 0 });
  });

  it('clears a device removed from the tailnet, and links the machine again when it re-joins', async () => {
    const a = await r.agent('device-lost');
    const before = await instanceOf(r, a.instanceId);
    await r.simApi('DELETE', `/devices/${a.deviceId}`);

    const report = await r.reconciler().runPass();

    expect(report.drift.map((d) => [d.kind, d.action])).to.deep.equal([['device_gone', 'repaired']]);
    let instance = await instanceOf(r, a.instanceId);
    expect(instance.status).to.equal('running');
    expect(instance.tailscaleDeviceId).to.equal(null);
    expect(instance.tailscaleIp).to.equal(null);
    expect(instance.error).to.match(new RegExp(`Tailnet device ${a.deviceId} was removed from the tailnet`));
    const events = (await eventsOf(r, a.instanceId)).filter((e) => e.reason.startsWith('reconcile:'));
    expect(events.map((e) => `${e.fromStatus}→${e.toStatus}`)).to.deep.equal(['running→running']);
    expect((await r.reconciler().runPass()).summary).to.include({ newFindings: 0, repairs: 0 });

    // The machine joins again (same hostname, new device).
    const { device } = await r.simApi('POST', '/devices', { hostname: before.tailscaleHostname, tags: ['tag:agent'] });
    const relinked = await r.reconciler().runPass();
    expect(relinked.drift.map((d) => [d.kind, d.action])).to.deep.equal([['device_replaced', 'repaired']]);
    instance = await instanceOf(r, a.instanceId);
    expect(instance.tailscaleDeviceId).to.equal(device.id);
    expect(instance.tailscaleIp).to.equal(device.addresses[0]);
    expect(instance.error).to.equal(null);
    expect(relinked.orphanDevices).to.deep.equal([]);
    expect((await r.reconciler().runPass()).summary.newFindings).to.equal(0);
  });

  it('leaves drift alone while an operation for the agent still has a live job', async () => {
    const a = await r.agent('busy');
    const opId = await newOperation(r.h, 'stop', a.agentId);
    await r.queues.stop.add('stop', { operationId: opId, agentId: a.agentId }, { jobId: jobIds.operation(opId) });
    await r.simApi('PATCH', `/servers/${a.serverId}`, { status: 'off' });

    const report = await r.reconciler().runPass();

    expect(report.drift.map((d) => [d.kind, d.action])).to.deep.equal([['server_off', 'deferred']]);
    expect(report.drift[0]!.detail).to.contain(opId);
    expect((await instanceOf(r, a.instanceId)).status).to.equal('running');
    expect(report.summary.repairs).to.equal(0);
  });

  it('loses the race to an operation that moved the instance after the snapshot', async () => {
    const a = await r.agent('racing');
    await r.simApi('PATCH', `/servers/${a.serverId}`, { status: 'off' });
    // A stop that starts between the database snapshot and the repair: its guarded move wins.
    const listServers = r.h.hetzner.listServers.bind(r.h.hetzner);
    const stub = sinon.stub(r.h.hetzner, 'listServers').callsFake(async (selector?: string) => {
      await transition(r.h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'stopping', reason: 'test: stop began' });
      return listServers(selector);
    });
    try {
      const report = await r.reconciler().runPass();
      expect(report.drift.map((d) => [d.kind, d.action])).to.deep.equal([['server_off', 'deferred']]);
      expect(report.drift[0]!.detail).to.match(/not recorded/);
      expect(report.summary).to.include({ repairs: 0, errors: 0 });
    } finally {
      stub.restore();
    }
    expect((await instanceOf(r, a.instanceId)).status).to.equal('stopping');
    expect((await agentOf(r, a.agentId)).status).to.equal('active');
  });
});
