import { expect } from 'chai';
import sinon from 'sinon';
import { CloudApiError } from '../../src/clients/errors';
import { StateConflictError } from '../../src/errors';
import { deleteSnapshotImage } from '../../src/workflows/snapshots';
import { silentLogger } from '../../src/lib/logger';
import {
  cloud,
  expectRejection,
  newOperation,
  provisionedAgent,
  recordingReporter,
  rows,
  serverCreates,
  transitionsOf,
  useLifecycleHarness,
  type AgentFixture,
} from '../helpers/lifecycle';

const CREATE_IMAGE = 'POST /hetzner/v1/servers/{id}/actions/create_image';

describe('lifecycle: hibernate and wake', function () {
  const h = useLifecycleHarness('lc_hibernate');

  const snapshotsMade = () => h.sim.control.requestCounts()[CREATE_IMAGE] ?? 0;
  const killed = () => new Error('worker killed');

  async function expectHibernated(a: AgentFixture, device: { id: string; ip: string }) {
    const { agent, instance } = await rows(h, a);
    expect(agent.status).to.equal('hibernated');
    expect(instance.status).to.equal('hibernated');
    expect(instance.serverId).to.equal(null);
    const { servers, images, devices } = cloud(h);
    expect(servers, 'no server left').to.have.length(0);
    expect(images, 'one snapshot').to.have.length(1);
    expect(images[0]!.status).to.equal('available');
    expect(images[0]!.labels).to.include({ 'managed-by': 'tailfleet', 'tailfleet-fleet': 'default', 'tailfleet-agent': a.agentId, 'tailfleet-instance': a.instanceId });
    expect(instance.snapshotImageId).to.equal(String(images[0]!.id));
    expect(instance.snapshotSizeGb).to.equal(images[0]!.image_size);
    // The device is kept, offline, with its id and address.
    expect(devices.map((d) => [d.id, d.addresses[0], d.connectedToControl])).to.deep.equal([[device.id, device.ip, false]]);
    expect(instance.tailscaleDeviceId).to.equal(device.id);
    return { agent, instance };
  }

  async function expectAwake(a: AgentFixture, device: { id: string; ip: string }) {
    const { agent, instance } = await rows(h, a);
    expect(agent.status).to.equal('active');
    expect(instance.status).to.equal('running');
    const { servers, images, devices } = cloud(h);
    expect(servers, 'one server').to.have.length(1);
    expect(servers[0]!.status).to.equal('running');
    expect(instance.serverId).to.equal(String(servers[0]!.id));
    expect(servers[0]!.labels).to.include({ 'managed-by': 'tailfleet', 'tailfleet-agent': a.agentId, 'tailfleet-instance': a.instanceId, 'tailfleet-job': a.provisioningJobId });
    expect(images, 'snapshot deleted').to.have.length(0);
    expect(instance.snapshotImageId).to.equal(null);
    expect(devices.map((d) => [d.id, d.addresses[0], d.connectedToControl])).to.deep.equal([[device.id, device.ip, true]]);
    expect([instance.tailscaleDeviceId, instance.tailscaleIp]).to.deep.equal([device.id, device.ip]);
    return { agent, instance, server: servers[0]! };
  }

  async function running(): Promise<{ a: AgentFixture; device: { id: string; ip: string } }> {
    const a = await provisionedAgent(h);
    const d = cloud(h).devices[0]!;
    return { a, device: { id: d.id, ip: d.addresses[0]! } };
  }

  async function hibernated() {
    const r = await running();
    await h.hibernation.hibernate(r.a.agentId);
    return r;
  }

  describe('hibernate', () => {
    it('shuts the server down, snapshots it, deletes it and keeps the device', async () => {
      const { a, device } = await running();
      const { id: serverId, name: serverName } = cloud(h).servers[0]!;
      const op = await newOperation(h, 'hibernate', a.agentId);
      const reporter = recordingReporter();
      await h.hibernation.hibernate(a.agentId, { operationId: op }, reporter);

      await expectHibernated(a, device);
      expect(snapshotsMade()).to.equal(1);
      expect(cloud(h).images[0]!.created_from).to.deep.equal({ id: serverId, name: serverName });
      expect(reporter.steps.map((s) => s.name)).to.deep.equal(['prepare', 'find-snapshot', 'shutdown', 'snapshot', 'wait-snapshot', 'delete-server', 'finish', 'done']);
      expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['running→hibernating', 'hibernating→hibernated']);
      expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('active→hibernated');

      // A redelivery of the same job is done; another hibernate is refused.
      await h.hibernation.hibernate(a.agentId, { operationId: op });
      expect(snapshotsMade()).to.equal(1);
      const err = await expectRejection(h.hibernation.hibernate(a.agentId, { operationId: await newOperation(h, 'hibernate', a.agentId) }));
      expect(err).to.be.instanceOf(StateConflictError);
    });

    it('hibernates a stopped agent too', async () => {
      const { a, device } = await running();
      await h.power.stop(a.agentId);
      await h.hibernation.hibernate(a.agentId);
      await expectHibernated(a, device);
      expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('paused→hibernated');
    });

    describe('resumes after the worker is killed', () => {
      it('before the snapshot was asked for (after the shutdown)', async () => {
        const { a, device } = await running();
        sinon.stub(h.hetzner, 'createSnapshot').rejects(killed());
        await expectRejection(h.hibernation.hibernate(a.agentId));
        sinon.restore();
        // Nothing was taken yet: the instance is back to what its server is (off).
        expect((await rows(h, a)).instance.status).to.equal('stopped');
        expect(cloud(h).servers[0]!.status).to.equal('off');
        await h.hibernation.hibernate(a.agentId);
        await expectHibernated(a, device);
        expect(snapshotsMade()).to.equal(1);
      });

      it('after the snapshot was made but its answer was lost: found by its labels, not made twice', async () => {
        const { a, device } = await running();
        const real = h.hetzner.createSnapshot.bind(h.hetzner);
        sinon.stub(h.hetzner, 'createSnapshot').callsFake(async (id, o) => {
          await real(id, o);
          throw killed();
        });
        await expectRejection(h.hibernation.hibernate(a.agentId));
        sinon.restore();
        expect((await rows(h, a)).instance.snapshotImageId).to.equal(null);
        await h.hibernation.hibernate(a.agentId);
        await expectHibernated(a, device);
        expect(snapshotsMade()).to.equal(1);
      });

      it('while waiting for the snapshot', async () => {
        const { a, device } = await running();
        sinon.stub(h.hetzner, 'waitForImageAvailable').rejects(killed());
        await expectRejection(h.hibernation.hibernate(a.agentId));
        sinon.restore();
        expect((await rows(h, a)).instance.snapshotImageId).to.be.a('string');
        await h.hibernation.hibernate(a.agentId);
        await expectHibernated(a, device);
        expect(snapshotsMade()).to.equal(1);
      });

      it('after the server was deleted, before the final transition', async () => {
        const { a, device } = await running();
        sinon.stub(h.hetzner, 'deleteServer').callsFake(async function (this: unknown, id: number) {
          await (h.hetzner.deleteServer as sinon.SinonStub).wrappedMethod.call(h.hetzner, id);
          throw killed();
        });
        await expectRejection(h.hibernation.hibernate(a.agentId));
        sinon.restore();
        expect(cloud(h).servers).to.have.length(0);
        expect((await rows(h, a)).instance.status).to.equal('hibernating');
        await h.hibernation.hibernate(a.agentId);
        await expectHibernated(a, device);
        expect(snapshotsMade()).to.equal(1);
      });
    });

    it('refuses an instance with neither a server nor a snapshot', async () => {
      const { a } = await running();
      h.sim.control.deleteServer(cloud(h).servers[0]!.id);
      const err = await expectRejection(h.hibernation.hibernate(a.agentId));
      expect(err).to.be.instanceOf(StateConflictError);
      expect(cloud(h).images).to.have.length(0);
    });
  });

  describe('wake', () => {
    it('creates a server from the snapshot that comes back as the same device, then deletes the snapshot', async () => {
      const { a, device } = await hibernated();
      const creates = serverCreates(h);
      const keysBefore = cloud(h).authKeys.length;
      const op = await newOperation(h, 'wake', a.agentId);
      const reporter = recordingReporter();
      const result = await h.hibernation.wake(a.agentId, { operationId: op }, reporter);

      const { server } = await expectAwake(a, device);
      expect(result).to.deep.equal({ serverId: server.id, deviceId: device.id, rejoined: false });
      expect(serverCreates(h) - creates).to.equal(1);
      expect(cloud(h).authKeys, 'no new auth key').to.have.length(keysBefore);
      expect(server.labels['tailfleet-join']).to.equal('snapshot');
      expect(server.image.type).to.equal('snapshot');
      expect(reporter.steps.at(-1)!.name).to.equal('done');
      expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['hibernated→waking', 'waking→running']);
      expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('hibernated→active');

      // And again: hibernate and wake a second time.
      await h.hibernation.hibernate(a.agentId);
      await expectHibernated(a, device);
      await h.hibernation.wake(a.agentId);
      await expectAwake(a, device);
    });

    it('refuses an instance that is not hibernated', async () => {
      const { a } = await running();
      const err = await expectRejection(h.hibernation.wake(a.agentId, { operationId: await newOperation(h, 'wake', a.agentId) }));
      expect(err).to.be.instanceOf(StateConflictError);
      expect(err.message).to.equal('No hibernated instance to wake');
    });

    describe('resumes after the worker is killed', () => {
      it('after the server was created but its answer was lost: found by its labels, not made twice', async () => {
        const { a, device } = await hibernated();
        const creates = serverCreates(h);
        const real = h.hetzner.createServer.bind(h.hetzner);
        sinon.stub(h.hetzner, 'createServer').callsFake(async (o) => {
          await real(o);
          throw killed();
        });
        await expectRejection(h.hibernation.wake(a.agentId));
        sinon.restore();
        expect((await rows(h, a)).instance.status).to.equal('waking');
        await h.hibernation.wake(a.agentId);
        await expectAwake(a, device);
        expect(serverCreates(h) - creates).to.equal(1);
      });

      it('while waiting for the device to come back', async () => {
        const { a, device } = await hibernated();
        const creates = serverCreates(h);
        sinon.stub(h.tailscale, 'waitForDeviceOnline').rejects(killed());
        await expectRejection(h.hibernation.wake(a.agentId));
        sinon.restore();
        await h.hibernation.wake(a.agentId);
        await expectAwake(a, device);
        expect(serverCreates(h) - creates).to.equal(1);
      });

      it('after the snapshot was deleted, before the final transition', async () => {
        const { a, device } = await hibernated();
        const creates = serverCreates(h);
        sinon.stub(h.hetzner, 'deleteImage').callsFake(async function (id: number) {
          await (h.hetzner.deleteImage as sinon.SinonStub).wrappedMethod.call(h.hetzner, id);
          throw killed();
        });
        await expectRejection(h.hibernation.wake(a.agentId));
        sinon.restore();
        expect(cloud(h).images).to.have.length(0);
        expect((await rows(h, a)).instance.status).to.equal('waking');
        await h.hibernation.wake(a.agentId);
        await expectAwake(a, device);
        expect(serverCreates(h) - creates).to.equal(1);
      });
    });

    it('joins the tailnet afresh with a new auth key when the device was deleted, and says so', async () => {
      const { a, device } = await hibernated();
      h.sim.control.deleteDevice(device.id);
      const reporter = recordingReporter();
      const result = await h.hibernation.wake(a.agentId, {}, reporter);

      expect(result!.rejoined).to.equal(true);
      const { agent, instance } = await rows(h, a);
      expect(agent.status).to.equal('active');
      expect(instance.status).to.equal('running');
      const { servers, devices, images, authKeys } = cloud(h);
      expect(servers, 'the snapshot-only server was replaced').to.have.length(1);
      expect(servers[0]!.labels['tailfleet-join']).to.equal('auth-key');
      expect(images).to.have.length(0);
      expect(devices).to.have.length(1);
      expect(devices[0]!.id).to.not.equal(device.id);
      expect(devices[0]!.connectedToControl).to.equal(true);
      expect(instance.tailscaleDeviceId).to.equal(devices[0]!.id);
      expect(instance.serverId).to.equal(String(servers[0]!.id));
      expect(authKeys.filter((k) => k.used)).to.have.length(2);
      expect(authKeys.every((k) => k.invalid), 'spent keys revoked').to.equal(true);
      expect(reporter.steps.map((s) => s.name)).to.include('rejoin');
      expect(reporter.steps.at(-1)!.name).to.equal('rejoined');
      const events = await transitionsOf(h, a.instanceId);
      expect(events.at(-1)).to.equal('waking→running');
    });

    it('finishes the fresh join after being killed in the middle of it, with one server', async () => {
      const { a, device } = await hibernated();
      h.sim.control.deleteDevice(device.id);
      sinon.stub(h.tailscale, 'createAuthKey').rejects(killed());
      await expectRejection(h.hibernation.wake(a.agentId));
      sinon.restore();
      expect(cloud(h).servers, 'the snapshot-only server is gone').to.have.length(0);
      const result = await h.hibernation.wake(a.agentId);
      expect(result!.rejoined).to.equal(true);
      expect(cloud(h).servers).to.have.length(1);
      expect((await rows(h, a)).instance.status).to.equal('running');
    });
  });

  describe('destroy', () => {
    it('from hibernated deletes the snapshot and the device', async () => {
      const { a } = await hibernated();
      await h.teardown.destroy(a.agentId);
      const { agent, instance } = await rows(h, a);
      expect(agent.status).to.equal('destroyed');
      expect(instance.status).to.equal('destroyed');
      const { servers, devices, images } = cloud(h);
      expect([servers.length, devices.length, images.length]).to.deep.equal([0, 0, 0]);
    });
  });

  describe('deleteSnapshotImage', () => {
    it('refuses an image whose labels do not name the agent and the fleet', async () => {
      const { a } = await hibernated();
      const image = cloud(h).images[0]!;
      const deps = { hetzner: h.hetzner, fleet: h.fleet, logger: silentLogger };
      const other = '00000000-0000-4000-8000-000000000001';
      const err = await expectRejection(deleteSnapshotImage(deps, { imageId: image.id, agentId: other }));
      expect(err).to.be.instanceOf(StateConflictError);
      expect(cloud(h).images).to.have.length(1);
      expect(await deleteSnapshotImage(deps, { imageId: image.id, agentId: a.agentId })).to.equal(true);
      expect(await deleteSnapshotImage(deps, { imageId: image.id, agentId: a.agentId })).to.equal(false);
    });
  });

  it('puts a hibernate that failed before any snapshot existed back to the stopped server, keeping the cloud error', async () => {
    const { a, device } = await running();
    h.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers/{id}/actions/create_image', status: 422, code: 'invalid_input', times: 1 }]);
    const err = await expectRejection(h.hibernation.hibernate(a.agentId));
    expect(err).to.be.instanceOf(CloudApiError);
    const { agent, instance } = await rows(h, a);
    expect([instance.status, agent.status]).to.deep.equal(['stopped', 'paused']);
    expect(instance.error).to.be.a('string');
    expect(cloud(h).servers.map((s) => s.status)).to.deep.equal(['off']);
    expect(cloud(h).images).to.have.length(0);
    // Asked again, it hibernates from there.
    await h.hibernation.hibernate(a.agentId);
    await expectHibernated(a, device);
  });

  it('puts a wake that failed before any server existed back to hibernated, keeping the cloud error; woken again, it wakes', async () => {
    const { a, device } = await hibernated();
    h.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 422, code: 'invalid_input', times: 1 }]);
    const err = await expectRejection(h.hibernation.wake(a.agentId));
    expect(err).to.be.instanceOf(CloudApiError);
    const { agent, instance } = await rows(h, a);
    expect([instance.status, agent.status]).to.deep.equal(['hibernated', 'hibernated']);
    expect(instance.error).to.be.a('string');
    expect(cloud(h).servers).to.have.length(0);
    expect(cloud(h).images).to.have.length(1);
    await h.hibernation.wake(a.agentId);
    await expectAwake(a, device);
  });
});
