import { expect } from 'chai';
import sinon from 'sinon';
import { CloudApiError } from '../../src/clients/errors';
import { HetznerClient } from '../../src/clients/hetzner/hetzner.client';
import { TailscaleClient } from '../../src/clients/tailscale/tailscale.client';
import { SIM_DEFAULT_CREDENTIALS } from '../../src/simulator';
import { TeardownWorkflow } from '../../src/workflows/teardown.workflow';
import { transition } from '../../src/db/transitions';
import { Instance } from '../../src/entities';
import { StateConflictError } from '../../src/errors';
import {
  cloud,
  eventually,
  expectRejection,
  newAgent,
  newOperation,
  provisionedAgent,
  rows,
  useLifecycleHarness,
  transitionsOf,
  type AgentFixture,
  settle,
  withQueueRetries,
} from '../helpers/lifecycle';

describe('lifecycle: destroy', function () {
  const h = useLifecycleHarness('lc_destroy');

  async function expectDestroyed(a: AgentFixture) {
    const { agent, instance } = await rows(h, a);
    expect(instance.status).to.equal('destroyed');
    expect(instance.destroyedAt).to.be.instanceOf(Date);
    expect(instance.error).to.equal(null);
    expect(agent.status).to.equal('destroyed');
    const { servers, devices } = cloud(h);
    expect(servers.filter((s) => s.labels['tailfleet-agent'] === a.agentId), 'servers left').to.have.length(0);
    expect(devices, 'devices left').to.have.length(0);
    return { agent, instance };
  }

  it('deletes server and device of a running agent and records destroyed', async () => {
    const a = await provisionedAgent(h);
    const op = await newOperation(h, 'destroy', a.agentId);
    await h.teardown.destroy(a.agentId, { operationId: op });
    await expectDestroyed(a);
    expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['running→destroying', 'destroying→destroyed']);
    expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('active→destroyed');
  });

  it('destroys a stopped agent', async () => {
    const a = await provisionedAgent(h);
    await h.power.stop(a.agentId);
    await h.teardown.destroy(a.agentId);
    await expectDestroyed(a);
    expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('paused→destroyed');
  });

  it('is a no-op for an agent that is already destroyed', async () => {
    const a = await provisionedAgent(h);
    await h.teardown.destroy(a.agentId);
    const events = await transitionsOf(h, a.agentId);
    h.sim.control.resetRequestCounts();
    await h.teardown.destroy(a.agentId);
    expect(h.sim.control.requestCounts()).to.deep.equal({});
    expect(await transitionsOf(h, a.agentId)).to.deep.equal(events);
  });

  it('keeps the instance destroying with the error when Hetzner fails, and a later run completes it', async () => {
    const a = await provisionedAgent(h);
    h.sim.control.setFaults([{ method: 'DELETE', route: '/hetzner/v1/servers/{id}', status: 500, times: 20 }]);
    const err = await expectRejection(h.teardown.destroy(a.agentId));
    expect(err).to.be.instanceOf(CloudApiError);

    const { agent, instance } = await rows(h, a);
    expect(instance.status).to.equal('destroying');
    expect(instance.error).to.be.a('string').with.length.greaterThan(0);
    expect(instance.destroyedAt).to.equal(null);
    expect(agent.status).to.equal('active');
    expect(cloud(h).servers).to.have.length(1);

    h.sim.control.clearFaults();
    await h.teardown.destroy(a.agentId);
    await expectDestroyed(a);
  });

  it('fails (and retries) rather than finishing while the device cannot be deleted', async () => {
    const a = await provisionedAgent(h);
    h.sim.control.setFaults([{ method: 'DELETE', route: '/tailscale/api/v2/device/{deviceId}', status: 500, times: 20 }]);
    await expectRejection(h.teardown.destroy(a.agentId));
    const { instance } = await rows(h, a);
    expect(instance.status).to.equal('destroying');
    expect(cloud(h).servers).to.have.length(0);
    expect(cloud(h).devices).to.have.length(1);

    h.sim.control.clearFaults();
    await h.teardown.destroy(a.agentId);
    await expectDestroyed(a);
  });

  it('shares the listings of concurrent destroys, and each still finds and deletes its own server and device', async () => {
    const fixtures = [await provisionedAgent(h, 'share-a'), await provisionedAgent(h, 'share-b'), await provisionedAgent(h, 'share-c')];
    // Clients whose shared listings wait long enough for the three destroys to meet.
    const hetzner = new HetznerClient({
      baseUrl: h.sim.hetznerUrl,
      token: SIM_DEFAULT_CREDENTIALS.hetznerToken,
      actionPollIntervalMs: 10,
      serverPollIntervalMs: 10,
      listingWindowMs: 300,
    });
    const tailscale = new TailscaleClient({
      baseUrl: h.sim.tailscaleUrl,
      clientId: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
      clientSecret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
      enrollmentPollIntervalMs: 10,
      listingWindowMs: 300,
    });
    const teardown = new TeardownWorkflow({ ...h.workflowDeps, hetzner, tailscale });
    h.sim.control.resetRequestCounts();

    await Promise.all(fixtures.map((a) => teardown.destroy(a.agentId)));

    for (const a of fixtures) await expectDestroyed(a);
    const counts = h.sim.control.requestCounts();
    expect(counts['DELETE /hetzner/v1/servers/{id}']).to.equal(3);
    expect(counts['DELETE /tailscale/api/v2/device/{deviceId}']).to.equal(3);
    // Looking and confirming, each once per destroy: six listings of each kind without sharing.
    expect(counts['GET /tailscale/api/v2/tailnet/{tailnet}/devices']).to.be.at.most(4);
    expect(counts['GET /hetzner/v1/servers']).to.be.at.most(4);
  });

  describe('resumes after a crash', () => {
    it('in destroying with the server already gone but the device still there', async () => {
      const a = await provisionedAgent(h);
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'destroying', reason: 'test' });
      h.sim.control.deleteServer(cloud(h).servers[0].id);
      await h.teardown.destroy(a.agentId);
      await expectDestroyed(a);
    });

    it('in destroying with server and device gone', async () => {
      const a = await provisionedAgent(h);
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'destroying', reason: 'test' });
      h.sim.control.deleteServer(cloud(h).servers[0].id);
      h.sim.control.deleteDevice(cloud(h).devices[0].id);
      await h.teardown.destroy(a.agentId);
      await expectDestroyed(a);
    });

    it('finds the device by hostname when its id and IP were never recorded', async () => {
      const a = await provisionedAgent(h);
      await h.ds.getRepository(Instance).update({ id: a.instanceId }, { tailscaleDeviceId: null, tailscaleIp: null });
      await h.teardown.destroy(a.agentId);
      await expectDestroyed(a);
    });

    it('finds the server by label when its id was never recorded', async () => {
      const a = await provisionedAgent(h);
      await h.ds.getRepository(Instance).update({ id: a.instanceId }, { serverId: null });
      await h.teardown.destroy(a.agentId);
      await expectDestroyed(a);
    });
  });

  it('destroys an agent whose provision never ran and closes its provisioning job', async () => {
    const a = await newAgent(h);
    await h.teardown.destroy(a.agentId);
    const { job } = await rows(h, a);
    await expectDestroyed(a);
    expect(job!.status).to.equal('failed');
  });

  it('wins against a provision in flight: the server it records is deleted and the provision stops', async () => {
    const a = await newAgent(h);
    const provision = settle(h.provision.provision({ provisioningJobId: a.provisioningJobId }));
    await eventually(async () => ((await rows(h, a)).instance.serverId ? true : undefined));
    // The server is locked while its create action runs; the destroy job retries like the queue does.
    await withQueueRetries(() => h.teardown.destroy(a.agentId));
    expect(await provision).to.be.instanceOf(StateConflictError);
    await expectDestroyed(a);
  });

  it('wins against a provision that creates its server after destroy started: the provision deletes it', async () => {
    const a = await newAgent(h);
    const real = h.hetzner.createServer.bind(h.hetzner);
    sinon.stub(h.hetzner, 'createServer').callsFake(async (o) => {
      // Destroy may already have finished by the time this looks: either state means it started.
      await eventually(async () => (['destroying', 'destroyed'].includes((await rows(h, a)).instance.status) ? true : undefined));
      return real(o);
    });
    const provision = settle(h.provision.provision({ provisioningJobId: a.provisioningJobId }));
    await eventually(async () => ((await rows(h, a)).instance.status === 'provisioning' ? true : undefined));
    await withQueueRetries(() => h.teardown.destroy(a.agentId));
    expect(await provision).to.be.instanceOf(StateConflictError);
    expect(cloud(h).authKeys.every((k) => k.revoked), 'auth key revoked').to.equal(true);
    await expectDestroyed(a);
  });

  it('marks an agent without a live instance destroyed (after a rolled-back provision)', async () => {
    const a = await newAgent(h);
    await h.teardown.rollback(a.provisioningJobId);
    await h.teardown.destroy(a.agentId);
    const { agent, instance } = await rows(h, a);
    expect(agent.status).to.equal('destroyed');
    expect(instance.status).to.equal('failed');
    expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('error→destroyed');
  });
});
