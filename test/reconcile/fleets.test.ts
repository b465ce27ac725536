import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import sinon from 'sinon';
import { Fleet } from '../../src/fleet/fleet';
import { FLEET_LABEL, MANAGED_LABEL, serverLabels } from '../../src/fleet/server-labels';
import type { ReconcileReport } from '../../src/reconcile';
import { startSimulator, type RunningSimulator } from '../../src/simulator';
import { eventually, FAST_TIMINGS, newAgent, settle, type AgentFixture } from '../helpers/lifecycle';
import { instanceOf, requestCounts, startReconcileHarness, type ReconcileHarness } from './harness';

const MANAGED = { [MANAGED_LABEL.key]: MANAGED_LABEL.value };
const DELETE_NOW = { orphans: 'delete', graceSeconds: 0 } as const;

/** A promise the test resolves when it lets a held provision go on. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe('reconcile: fleets sharing one Hetzner project and tailnet', function () {
  this.timeout(60_000);
  let sim: RunningSimulator;
  let blue: ReconcileHarness;
  let green: ReconcileHarness;
  let legacy: ReconcileHarness;

  before(async () => {
    sim = await startSimulator({ timings: FAST_TIMINGS, seed: 11 });
    // Each fleet: its own database and queue prefix, the same simulator.
    blue = await startReconcileHarness('fleet_blue', { sim, fleet: 'blue' });
    green = await startReconcileHarness('fleet_green', { sim, fleet: 'green' });
    legacy = await startReconcileHarness('fleet_default', { sim });
  });
  after(async () => {
    for (const r of [blue, green, legacy]) await r?.close();
    await sim?.close();
  });
  beforeEach(async () => {
    for (const r of [blue, green, legacy]) await r.reset();
    sim.control.reset(FAST_TIMINGS);
  });
  afterEach(() => {
    sinon.restore();
  });

  const servers = () => sim.control.state().servers;
  const devices = () => sim.control.state().devices;
  const serverIds = () => servers().map((s) => s.id);
  const deviceIds = () => devices().map((d) => d.id);

  /** A labelled server and a tagged device no instance of `r`'s fleet owns, named the way that fleet names machines. */
  async function orphansOf(r: ReconcileHarness) {
    const name = r.h.fleet.hostname('lost-box', randomUUID());
    const { server } = await r.simApi('POST', '/servers', {
      name,
      status: 'running',
      labels: { ...MANAGED, ...r.h.fleet.labels(), 'tailfleet-job': randomUUID() },
    });
    const { device } = await r.simApi('POST', '/devices', {
      hostname: r.h.fleet.hostname('lost-device', randomUUID()),
      tags: ['tag:agent'],
    });
    return { server: server as { id: number }, device: device as { id: string } };
  }

  /**
   * Provisions in flight, held by gates on this fleet's own clients: one whose server exists but
   * whose id is not recorded yet (held right after the create call), one whose server is recorded
   * and whose device has joined the tailnet but is not recorded yet (held before the enrollment wait).
   */
  async function inFlightProvisions(r: ReconcileHarness, name: string) {
    const created = gate();
    const enrolled = gate();
    const creating = await newAgent(r.h, `${name}-creating`);
    const enrolling = await newAgent(r.h, `${name}-enrolling`);
    const createServer = r.h.hetzner.createServer.bind(r.h.hetzner);
    sinon.stub(r.h.hetzner, 'createServer').callsFake(async (o) => {
      const result = await createServer(o);
      if (o.labels?.['tailfleet-job'] === creating.provisioningJobId) await created.opened;
      return result;
    });
    const waitForEnrollment = r.h.tailscale.waitForEnrollment.bind(r.h.tailscale);
    sinon.stub(r.h.tailscale, 'waitForEnrollment').callsFake(async (hostname, o) => {
      const instance = await instanceOf(r, enrolling.instanceId);
      if (hostname === instance.tailscaleHostname) await enrolled.opened;
      return waitForEnrollment(hostname, o);
    });
    const run = (a: AgentFixture) =>
      settle(r.h.provision.provision({ provisioningJobId: a.provisioningJobId, operationId: a.provisionOperationId }));
    const done = [run(creating), run(enrolling)];

    // Held where each should be: the first server exists at Hetzner with no id recorded; the second
    // is recorded and its device is in the tailnet, not recorded.
    await eventually(() => (servers().some((s) => s.labels['tailfleet-job'] === creating.provisioningJobId) ? true : undefined));
    const enrollingHost = await eventually(async () => {
      const i = await instanceOf(r, enrolling.instanceId);
      return i.serverId && devices().some((d) => d.hostname === i.tailscaleHostname) ? i.tailscaleHostname! : undefined;
    });
    expect((await instanceOf(r, creating.instanceId)).serverId).to.equal(null);
    expect((await instanceOf(r, enrolling.instanceId)).tailscaleDeviceId).to.equal(null);

    return {
      creating,
      enrolling,
      enrollingHost,
      async release() {
        created.open();
        enrolled.open();
        const errors = await Promise.all(done);
        expect(errors).to.deep.equal([null, null]);
      },
    };
  }

  /** Every server and device id the report names, whatever it did with them. */
  function named(report: ReconcileReport) {
    return {
      servers: [...report.orphanServers.map((o) => Number(o.serverId)), ...report.drift.map((d) => Number(d.serverId))],
      devices: [...report.orphanDevices.map((o) => o.deviceId), ...report.drift.map((d) => d.deviceId)],
    };
  }

  it('gives each fleet its label and a hostname only it claims', async () => {
    const b = await blue.agent('builder');
    const g = await green.agent('builder');
    const bServer = servers().find((s) => s.id === Number(b.serverId))!;
    const gServer = servers().find((s) => s.id === Number(g.serverId))!;
    expect(bServer.labels).to.include({ [FLEET_LABEL]: 'blue', ...MANAGED });
    expect(gServer.labels).to.include({ [FLEET_LABEL]: 'green', ...MANAGED });

    const bHost = (await instanceOf(blue, b.instanceId)).tailscaleHostname!;
    const gHost = (await instanceOf(green, g.instanceId)).tailscaleHostname!;
    expect(bHost).to.equal(`builder-${b.agentId.slice(0, 8)}--${blue.h.fleet.code}`);
    expect(gHost).to.not.equal(bHost);
    expect([blue.h.fleet.ownsHostname(bHost), blue.h.fleet.ownsHostname(gHost)]).to.deep.equal([true, false]);
    expect([green.h.fleet.ownsHostname(gHost), green.h.fleet.ownsHostname(bHost)]).to.deep.equal([true, false]);
    // Neither is taken for a machine from before fleets.
    expect([legacy.h.fleet.ownsHostname(bHost), legacy.h.fleet.ownsHostname(gHost)]).to.deep.equal([false, false]);
  });

  it('two fleets in delete mode with zero grace each delete only their own orphan, even with provisions in flight', async () => {
    const steady = { blue: await blue.agent('steady'), green: await green.agent('steady') };
    const orphans = { blue: await orphansOf(blue), green: await orphansOf(green) };
    const held = { blue: await inFlightProvisions(blue, 'blue'), green: await inFlightProvisions(green, 'green') };
    const before = { servers: serverIds(), devices: deviceIds() };
    expect(before.servers).to.have.length(8);

    // Both fleets' passes at once, twice: each sees the other's machines in the same project and tailnet.
    const first = await Promise.all([blue.reconciler(DELETE_NOW).runPass(), green.reconciler(DELETE_NOW).runPass()]);
    const second = await Promise.all([blue.reconciler(DELETE_NOW).runPass(), green.reconciler(DELETE_NOW).runPass()]);

    for (const [fleet, own, other] of [
      ['blue', first[0], first[1]],
      ['green', first[1], first[0]],
    ] as const) {
      const mine = orphans[fleet];
      expect(own.orphanServers.map((o) => [Number(o.serverId), o.action]), `${fleet} orphan servers`).to.deep.equal([[mine.server.id, 'deleted']]);
      expect(own.orphanDevices.map((o) => [o.deviceId, o.action]), `${fleet} orphan devices`).to.deep.equal([[mine.device.id, 'deleted']]);
      expect(own.drift, `${fleet} drift`).to.deep.equal([]);
      expect(own.stuck, `${fleet} stuck`).to.deep.equal([]);
      expect(own.errors, `${fleet} errors`).to.deep.equal([]);
      // Only its own four servers were looked at: steady, two in flight, the orphan.
      expect(own.observed.servers, `${fleet} servers observed`).to.equal(4);
      expect(own.summary.inFlight, `${fleet} in flight`).to.be.at.least(1);
      // The other fleet's orphan never shows up in this fleet's report.
      expect(named(own).servers).to.not.include(orphans[fleet === 'blue' ? 'green' : 'blue'].server.id);
      expect(named(own).devices).to.not.include(orphans[fleet === 'blue' ? 'green' : 'blue'].device.id);
      expect(named(other).servers).to.not.include(mine.server.id);
    }
    for (const report of second) {
      expect(report.orphanServers).to.deep.equal([]);
      expect(report.orphanDevices).to.deep.equal([]);
      expect(report.drift).to.deep.equal([]);
      expect(report.summary.repairs).to.equal(0);
    }

    // Exactly the two orphans of each fleet are gone; everything else is still there.
    const deleted = { servers: [orphans.blue.server.id, orphans.green.server.id], devices: [orphans.blue.device.id, orphans.green.device.id] };
    expect(serverIds()).to.have.members(before.servers.filter((id) => !deleted.servers.includes(id)));
    expect(deviceIds()).to.have.members(before.devices.filter((id) => !deleted.devices.includes(id)));
    expect(requestCounts(blue)['DELETE /hetzner/v1/servers/{id}']).to.equal(2);
    expect(requestCounts(blue)['DELETE /tailscale/api/v2/device/{deviceId}']).to.equal(2);
    for (const [r, a] of [
      [blue, steady.blue],
      [green, steady.green],
    ] as const) {
      const instance = await instanceOf(r, a.instanceId);
      expect(instance.status).to.equal('running');
      expect(instance.tailscaleDeviceId).to.equal(a.deviceId);
      expect(servers().find((s) => s.id === Number(a.serverId))!.status).to.equal('running');
    }
    for (const [r, h] of [
      [blue, held.blue],
      [green, held.green],
    ] as const) {
      expect((await instanceOf(r, h.creating.instanceId)).status).to.equal('provisioning');
      expect((await instanceOf(r, h.enrolling.instanceId)).status).to.equal('provisioning');
    }

    // The held provisions finish with the servers and devices the passes left alone.
    await held.blue.release();
    await held.green.release();
    for (const [r, h] of [
      [blue, held.blue],
      [green, held.green],
    ] as const) {
      for (const a of [h.creating, h.enrolling]) {
        const instance = await instanceOf(r, a.instanceId);
        expect(instance.status).to.equal('running');
        expect(serverIds()).to.include(Number(instance.serverId));
        expect(deviceIds()).to.include(instance.tailscaleDeviceId);
      }
      const after = await r.reconciler(DELETE_NOW).runPass();
      expect(after.orphanServers).to.deep.equal([]);
      expect(after.orphanDevices).to.deep.equal([]);
      expect(after.drift).to.deep.equal([]);
      expect(after.observed.servers).to.equal(3);
    }
    expect(servers()).to.have.length(6);
    expect(devices()).to.have.length(6);
  });

  it('leaves an unlabelled (legacy) managed server and old-form device to the default fleet; blue ignores them', async () => {
    const b = await blue.agent('blue-box');
    const d = await legacy.agent('old-agent');
    // A server made before fleets: no fleet label. Its instance still owns it in the default fleet.
    const { [FLEET_LABEL]: _fleet, ...unfleeted } = serverLabels(legacy.h.fleet, {
      agentId: d.agentId,
      provisioningJobId: d.provisioningJobId,
      instanceId: d.instanceId,
    });
    await legacy.simApi('PATCH', `/servers/${d.serverId}`, { labels: unfleeted });
    // Left behind by a deployment from before fleets: a managed server and a device named the old way.
    const { server: oldServer } = await legacy.simApi('POST', '/servers', {
      name: 'old-box-1a2b3c4d',
      status: 'running',
      labels: { ...MANAGED, 'tailfleet-job': randomUUID() },
    });
    const { device: oldDevice } = await legacy.simApi('POST', '/devices', { hostname: 'old-box-1a2b3c4d', tags: ['tag:agent'] });

    const byBlue = await blue.reconciler(DELETE_NOW).runPass();
    expect(byBlue.observed.servers).to.equal(1);
    expect(byBlue.orphanServers).to.deep.equal([]);
    expect(byBlue.orphanDevices).to.deep.equal([]);
    expect(byBlue.drift).to.deep.equal([]);
    expect(serverIds()).to.include.members([oldServer.id, Number(d.serverId), Number(b.serverId)]);
    expect(deviceIds()).to.include.members([oldDevice.id, d.deviceId, b.deviceId]);

    const byDefault = await legacy.reconciler(DELETE_NOW).runPass();
    // Its own unlabelled server (still owned) and the legacy orphan; never blue's.
    expect(byDefault.observed.servers).to.equal(2);
    expect(byDefault.drift).to.deep.equal([]);
    expect(byDefault.orphanServers.map((o) => [Number(o.serverId), o.action])).to.deep.equal([[oldServer.id, 'deleted']]);
    expect(byDefault.orphanDevices.map((o) => [o.deviceId, o.action])).to.deep.equal([[oldDevice.id, 'deleted']]);
    expect(serverIds()).to.have.members([Number(d.serverId), Number(b.serverId)]);
    expect(deviceIds()).to.have.members([d.deviceId, b.deviceId]);
    expect((await instanceOf(legacy, d.instanceId)).status).to.equal('running');

    // A fleet with another name never adopts unlabelled servers, whatever their other labels say.
    const unlabelledServer = { labels: { ...MANAGED } };
    expect([new Fleet().ownsServer(unlabelledServer), new Fleet('blue').ownsServer(unlabelledServer)]).to.deep.equal([true, false]);
    expect([new Fleet().ownsHostname('old-box-1a2b3c4d'), new Fleet('blue').ownsHostname('old-box-1a2b3c4d')]).to.deep.equal([true, false]);
  });
});
