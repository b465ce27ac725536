import { expect } from 'chai';
import { StateConflictError, NotFoundError } from '../../src/services/errors';
import {
  cloud,
  expectRejection,
  newAgent,
  recordingReporter,
  rows,
  serverCreates,
  startLifecycleHarness,
  transitionsOf,
  type LifecycleHarness,
} from '../helpers/lifecycle';

describe('lifecycle: provision', function () {
  let h: LifecycleHarness;

  before(async () => {
    h = await startLifecycleHarness('lc_provision');
  });
  after(async () => {
    await h?.close();
  });
  beforeEach(async () => {
    await h.reset();
  });

  it('creates one labelled server, enrolls its device and records everything', async () => {
    const a = await newAgent(h, 'Build Box #1');
    const reporter = recordingReporter();
    await h.service.provision({ provisioningJobId: a.provisioningJobId, operationId: a.provisionOperationId }, reporter);

    const { agent, instance, job } = await rows(h, a);
    expect(agent.status).to.equal('active');
    expect(instance.status).to.equal('running');
    expect(instance.startedAt).to.be.instanceOf(Date);
    expect(instance.error).to.equal(null);
    expect(job!.status).to.equal('succeeded');
    expect(job!.attempts).to.equal(1);

    const { servers, devices, authKeys } = cloud(h);
    expect(servers).to.have.length(1);
    const [server] = servers;
    expect(instance.serverId).to.equal(String(server.id));
    expect(instance.serverIp).to.equal(server.public_net.ipv4!.ip);
    expect(server.status).to.equal('running');
    expect(server.labels).to.include({
      'managed-by': 'tailfleet',
      'tailfleet-agent': a.agentId,
      'tailfleet-job': a.provisioningJobId,
    });
    expect(instance.tailscaleHostname).to.match(/^build-box-1-[0-9a-f]{8}$/);
    expect(server.name).to.equal(instance.tailscaleHostname);

    expect(devices).to.have.length(1);
    expect(instance.tailscaleDeviceId).to.equal(devices[0].id);
    expect(devices[0].hostname).to.equal(instance.tailscaleHostname);
    expect(devices[0].addresses).to.include(instance.tailscaleIp);

    expect(authKeys).to.have.length(1);
    expect(authKeys[0].used).to.equal(true);
    expect(authKeys[0].capabilities?.devices?.create).to.include({ reusable: false, ephemeral: false, preauthorized: true });

    expect(await transitionsOf(h, a.instanceId)).to.deep.equal(['∅→pending', 'pending→provisioning', 'provisioning→running']);
    expect(await transitionsOf(h, a.agentId)).to.deep.equal(['∅→draft', 'draft→provisioning', 'provisioning→active']);
    expect(await transitionsOf(h, a.provisioningJobId)).to.deep.equal(['∅→queued', 'queued→running', 'running→succeeded']);
    expect(reporter.steps.map((s) => s.name)).to.include.members(['prepare', 'create-server', 'wait-server', 'wait-enrollment', 'done']);
    expect(reporter.steps.at(-1)!.progress).to.equal(100);
    expect(serverCreates(h)).to.equal(1);
  });
});
