import { expect } from 'chai';
import pino from 'pino';
import sinon from 'sinon';
import { waitFor } from '../helpers/wait';
import { CloudApiError } from '../../src/clients/errors';
import { transition } from '../../src/db/transitions';
import { Instance } from '../../src/entities';
import { NotFoundError, StateConflictError } from '../../src/errors';
import { TailscaleClient } from '../../src/clients/tailscale/tailscale.client';
import { describesJob } from '../../src/fleet/ownership-guard';
import { silentLogger } from '../../src/lib/logger';
import { SIM_DEFAULT_CREDENTIALS } from '../../src/simulator';
import { ProvisionWorkflow, type WorkflowDeps } from '../../src/workflows';
import { mintJobAuthKey } from '../../src/workflows/auth-keys';
import { OwnershipGuard } from '../../src/fleet/ownership-guard';
import {
  cloud,
  FAST_SETTINGS,
  expectRejection,
  newAgent,
  provisionedAgent,
  recordingReporter,
  rows,
  serverCreates,
  settle,
  useLifecycleHarness,
  transitionsOf,
  type AgentFixture,
} from '../helpers/lifecycle';

describe('lifecycle: provision', function () {
  const h = useLifecycleHarness('lc_provision');

  const run = (a: AgentFixture) => h.provision.provision({ provisioningJobId: a.provisioningJobId, operationId: a.provisionOperationId });

  /** The create call reaches the cloud, but its answer is lost (as on a timeout or a crash right after). */
  function loseNextCreateResponse() {
    const real = h.hetzner.createServer.bind(h.hetzner);
    return sinon.stub(h.hetzner, 'createServer').callsFake(async (o) => {
      await real(o);
      throw new CloudApiError({
        api: 'hetzner',
        status: 0,
        code: 'timeout',
        message: 'request timed out',
        retryable: true,
        method: 'POST',
        path: '/servers',
      });
    });
  }

  async function expectProvisioned(a: AgentFixture) {
    const { agent, instance, job } = await rows(h, a);
    expect(agent.status).to.equal('active');
    expect(instance.status).to.equal('running');
    expect(job!.status).to.equal('succeeded');
    const { servers, devices } = cloud(h);
    expect(servers).to.have.length(1);
    expect(servers[0].status).to.equal('running');
    expect(instance.serverId).to.equal(String(servers[0].id));
    expect(devices).to.have.length(1);
    expect(instance.tailscaleDeviceId).to.equal(devices[0].id);
    return { agent, instance, job: job! };
  }

  it('creates one labelled server, enrolls its device and records everything', async () => {
    const a = await newAgent(h, 'Build Box #1');
    const reporter = recordingReporter();
    await h.provision.provision({ provisioningJobId: a.provisioningJobId, operationId: a.provisionOperationId }, reporter);

    const { instance, job } = await expectProvisioned(a);
    expect(instance.startedAt).to.be.instanceOf(Date);
    expect(instance.error).to.equal(null);
    expect(job.attempts).to.equal(1);
    expect(job.finishedAt).to.be.instanceOf(Date);

    const { servers, devices, authKeys } = cloud(h);
    const [server] = servers;
    expect(instance.serverIp).to.equal(server.public_net.ipv4!.ip);
    expect(server.labels).to.include({
      'managed-by': 'tailfleet',
      'tailfleet-agent': a.agentId,
      'tailfleet-job': a.provisioningJobId,
      'tailfleet-fleet': 'default',
    });
    // `<name slug>-<8 hex of the agent id>--<fleet code>`: the fleet mark tells fleets' devices apart.
    expect(instance.tailscaleHostname).to.equal(`build-box-1-${a.agentId.slice(0, 8)}--${h.fleet.code}`);
    expect(server.name).to.equal(instance.tailscaleHostname);
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

  it('refuses an unknown provisioning job', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    const err = await expectRejection(h.provision.provision({ provisioningJobId: id }));
    expect(err).to.be.instanceOf(NotFoundError);
    expect(err.message).to.equal(`Job ${id} not found`);
  });

  it('is a no-op for a job that already succeeded', async () => {
    const a = await provisionedAgent(h);
    h.sim.control.resetRequestCounts();
    await run(a);
    expect(h.sim.control.requestCounts()).to.deep.equal({});
    expect((await rows(h, a)).job!.attempts).to.equal(1);
  });

  it('lets the database refuse a second live instance for the agent', async () => {
    const a = await provisionedAgent(h);
    const err = await expectRejection(
      h.ds.getRepository(Instance).insert({ agentId: a.agentId, serverType: 'cx22', image: 'ubuntu-24.04' }),
    );
    expect((err as { driverError?: { constraint?: string } }).driverError?.constraint).to.equal('uq_instances_live_agent');
  });

  describe('resumes after a crash', () => {
    it('after the instance moved to provisioning and before any cloud call', async () => {
      const a = await newAgent(h);
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['pending'], to: 'provisioning', reason: 'test' });
      await transition(h.ds, { entity: 'agent', id: a.agentId, from: ['draft'], to: 'provisioning', reason: 'test' });
      await transition(h.ds, { entity: 'provisioning_job', id: a.provisioningJobId, from: ['queued'], to: 'running', reason: 'test' });
      await run(a);
      const { job } = await expectProvisioned(a);
      expect(job.attempts).to.equal(1);
      expect(serverCreates(h)).to.equal(1);
    });

    it('after the server was created but its id never reached the database', async () => {
      const a = await newAgent(h);
      const stub = loseNextCreateResponse();
      const err = await expectRejection(run(a));
      expect(err).to.be.instanceOf(CloudApiError);
      stub.restore();

      const failed = await rows(h, a);
      expect(failed.instance.status).to.equal('provisioning');
      expect(failed.instance.serverId).to.equal(null);
      expect(failed.job!.failedStep).to.equal('create-server');
      expect(failed.job!.error).to.equal('request timed out');
      expect(cloud(h).servers).to.have.length(1);

      await run(a);
      const { job } = await expectProvisioned(a);
      expect(job.attempts).to.equal(2);
      expect(job.error).to.equal(null);
      expect(serverCreates(h)).to.equal(1);
      // The first attempt's key was kept (the server might use it) and was indeed the one that enrolled.
      expect(cloud(h).authKeys).to.have.length(1);
    });

    it('after the server id was stored but before the device enrolled', async () => {
      const a = await newAgent(h);
      sinon.stub(h.tailscale, 'waitForEnrollment').rejects(new Error('worker killed'));
      await expectRejection(run(a));
      sinon.restore();

      const mid = await rows(h, a);
      expect(mid.instance.status).to.equal('provisioning');
      expect(mid.instance.serverId).to.be.a('string');
      expect(mid.instance.tailscaleDeviceId).to.equal(null);
      expect(mid.job!.failedStep).to.equal('wait-enrollment');

      await run(a);
      await expectProvisioned(a);
      expect(serverCreates(h)).to.equal(1);
    });

    it('after the device was recorded but before the final transition', async () => {
      const a = await provisionedAgent(h);
      // Wind the rows back to the moment before the last transaction (a crash there rolls it back).
      await h.ds.query(`UPDATE instances SET status = 'provisioning', started_at = NULL WHERE id = $1`, [a.instanceId]);
      await h.ds.query(`UPDATE agents SET status = 'provisioning' WHERE id = $1`, [a.agentId]);
      await h.ds.query(`UPDATE provisioning_jobs SET status = 'running' WHERE id = $1`, [a.provisioningJobId]);
      h.sim.control.resetRequestCounts();

      await run(a);
      await expectProvisioned(a);
      const counts = h.sim.control.requestCounts();
      expect(counts['POST /hetzner/v1/servers'] ?? 0).to.equal(0);
      expect(counts['POST /tailscale/api/v2/tailnet/{tailnet}/keys'] ?? 0).to.equal(0);
      expect(counts['GET /tailscale/api/v2/tailnet/{tailnet}/devices'] ?? 0).to.equal(0);
    });

    it('powers the server on again if it was found off', async () => {
      const a = await newAgent(h);
      sinon.stub(h.tailscale, 'waitForEnrollment').rejects(new Error('worker killed'));
      await expectRejection(run(a));
      sinon.restore();
      const { instance } = await rows(h, a);
      h.sim.control.updateServer(Number(instance.serverId), { status: 'off' });

      await run(a);
      await expectProvisioned(a);
      expect(serverCreates(h)).to.equal(1);
    });
  });

  it('keeps one server when two attempts of the same job run at once', async () => {
    const a = await newAgent(h);
    const results = await Promise.allSettled([run(a), run(a)]);
    const failures = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason);
    for (const f of failures) expect(f).to.be.instanceOf(StateConflictError);
    const { job, instance } = await expectProvisioned(a);
    // The loser's conflict is not written over the winner's record.
    expect(job.error).to.equal(null);
    expect(instance.error).to.equal(null);
  });

  it('when two attempts of one job create at once, the second continues with the first one\'s server', async () => {
    const a = await newAgent(h);
    const real = h.hetzner.createServer.bind(h.hetzner);
    let arrivals = 0;
    let firstArrived!: () => void;
    let secondArrived!: () => void;
    const first = new Promise<void>((r) => (firstArrived = r));
    const second = new Promise<void>((r) => (secondArrived = r));
    sinon.stub(h.hetzner, 'createServer').callsFake(async (o) => {
      if (++arrivals === 1) {
        firstArrived();
        await second;
      } else {
        secondArrived();
      }
      return real(o);
    });

    const p1 = settle(run(a));
    await first;
    const p2 = settle(run(a)); // a redelivery while the first attempt still runs: resumes, finds no server yet
    const errors = await Promise.all([p1, p2]);
    expect(errors.filter((e) => e === null)).to.have.length(1);
    expect(errors.find((e) => e !== null)).to.be.instanceOf(StateConflictError);

    const { instance } = await expectProvisioned(a);
    // Hetzner refused the second create (the name is taken), so there never was a second server.
    expect(serverCreates(h)).to.equal(2);
    expect(cloud(h).servers).to.have.length(1);
    const keys = cloud(h).authKeys;
    expect(keys).to.have.length(2);
    expect(keys.filter((k) => k.used)).to.have.length(1);
    expect(keys.filter((k) => !k.used && k.revoked)).to.have.length(1);
    // Nothing left that could join another machine.
    expect(keys.filter((k) => !k.invalid)).to.deep.equal([]);
    expect(instance.error).to.equal(null);
  });

  it('stops as a lost race, writing nothing on the job, when another attempt stored its server before this one chose a placement', async () => {
    const a = await newAgent(h);
    const real = h.tailscale.createAuthKey.bind(h.tailscale);
    let calls = 0;
    // The first attempt is held at its auth key until the second has created and recorded its server.
    sinon.stub(h.tailscale, 'createAuthKey').callsFake(async (o) => {
      if (++calls === 1) {
        await waitFor('the other attempt to record its server', async () => (await rows(h, a)).instance.serverId);
      }
      return real(o);
    });
    const held = settle(run(a));
    await waitFor('the first attempt to ask for its key', () => calls === 1);
    await run(a);
    const err = await held;
    expect(err).to.be.instanceOf(StateConflictError);
    expect((err as StateConflictError).lostRace).to.equal(true);
    // The winner's record stands: the loser wrote no failure over it.
    const { job, instance } = await expectProvisioned(a);
    expect(job.error).to.equal(null);
    expect(job.failedStep).to.equal(null);
    expect(instance.error).to.equal(null);
    expect(cloud(h).servers).to.have.length(1);
  });

  it('records the failure and keeps the instance provisioning when enrollment times out', async () => {
    const impatient = new ProvisionWorkflow({ ...h.workflowDeps, settings: { ...FAST_SETTINGS, enrollmentTimeoutMs: 100 } });
    h.sim.control.setTimings({ enrollDelayMs: 60_000 });
    const a = await newAgent(h);
    const err = await expectRejection(impatient.provision({ provisioningJobId: a.provisioningJobId }));
    expect(err).to.be.instanceOf(CloudApiError);
    expect((err as CloudApiError).retryable).to.equal(true);
    const { instance, job, agent } = await rows(h, a);
    expect(instance.status).to.equal('provisioning');
    expect(instance.serverId).to.be.a('string');
    expect(instance.error).to.match(/enrolled within 100 ms/);
    expect(job!.status).to.equal('running');
    expect(job!.failedStep).to.equal('wait-enrollment');
    expect(agent.status).to.equal('provisioning');
  });

  it('deletes the unused auth key when Hetzner refuses the create', async () => {
    const a = await newAgent(h);
    h.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 422, code: 'invalid_input', times: 1 }]);
    const err = await expectRejection(run(a));
    expect(err).to.be.instanceOf(CloudApiError);
    expect((err as CloudApiError).status).to.equal(422);

    const { authKeys, servers } = cloud(h);
    expect(servers).to.have.length(0);
    expect(authKeys).to.have.length(1);
    expect(authKeys[0].revoked, 'auth key revoked').to.be.a('string');
    const { job } = await rows(h, a);
    expect(job!.failedStep).to.equal('create-server');

    // The job's retry creates a fresh key and the server.
    await run(a);
    await expectProvisioned(a);
  });

  it('revokes the key of an attempt whose create may have failed, once the provision has succeeded', async () => {
    const a = await newAgent(h);
    // A 503 on create is ambiguous (the server may exist), so the first attempt must keep its key.
    h.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 503, times: 1 }]);
    await expectRejection(run(a));
    const first = cloud(h).authKeys;
    expect(first).to.have.length(1);
    expect(first[0].invalid, 'first key still valid after an ambiguous failure').to.equal(false);

    await run(a);
    await expectProvisioned(a);
    const keys = cloud(h).authKeys;
    expect(keys).to.have.length(2);
    // Every key is now spent or revoked: none is left that could still join a machine.
    expect(keys.filter((k: { invalid: boolean }) => !k.invalid)).to.deep.equal([]);
    expect(keys.find((k: { id: string }) => k.id === first[0].id)?.revoked, 'first key revoked').to.be.a('string');
  });

  it('rollback revokes the auth key of a server that never used it', async () => {
    const a = await newAgent(h);
    h.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 503, times: 1 }]);
    await expectRejection(run(a));
    await h.teardown.rollback(a.provisioningJobId);
    const keys = cloud(h).authKeys;
    expect(keys).to.have.length(1);
    expect(keys[0].invalid, 'key revoked by the rollback').to.equal(true);
    const { job } = await rows(h, a);
    expect(job!.status).to.equal('rolled_back');
    expect(job!.authKeyIds).to.deep.equal([]);
  });

  it('keeps the auth key out of the database and the logs', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'trace' }, { write: (line: string) => void lines.push(line) });
    const service = new ProvisionWorkflow({ ...h.workflowDeps, logger });
    const keySpy = sinon.spy(h.tailscale, 'createAuthKey');
    const a = await newAgent(h);
    await service.provision({ provisioningJobId: a.provisioningJobId, operationId: a.provisionOperationId });

    const { key } = await keySpy.firstCall.returnValue;
    expect(key).to.have.length.greaterThan(10);
    const dump = JSON.stringify(await h.ds.query(`SELECT row_to_json(t) FROM (SELECT * FROM instances) t
      UNION ALL SELECT row_to_json(t) FROM (SELECT * FROM provisioning_jobs) t
      UNION ALL SELECT row_to_json(t) FROM (SELECT * FROM events) t
      UNION ALL SELECT row_to_json(t) FROM (SELECT * FROM operations) t`));
    expect(dump).to.include(a.instanceId);
    expect(dump).to.not.include(key);
    expect(lines.join('')).to.include(`[Lifecycle] Agent ${a.agentId} provisioned successfully`);
    expect(lines.join('')).to.not.include(key);
  });

  describe('auth keys: nothing live left behind', () => {
    const KEYS_ROUTE = '/tailscale/api/v2/tailnet/{tailnet}/keys';

    /** The harness's workflows with a Tailscale client that gives up on an answer after 200 ms. */
    function impatientDeps(): WorkflowDeps {
      const tailscale = new TailscaleClient({
        baseUrl: h.sim.tailscaleUrl,
        clientId: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
        clientSecret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
        requestTimeoutMs: 200,
        retryBaseDelayMs: 5,
        retryMaxDelayMs: 20,
        enrollmentPollIntervalMs: 10,
      });
      return { ...h.workflowDeps, tailscale };
    }

    /** The keys whose description names the job, as the simulator holds them. */
    function jobKeys(a: AgentFixture) {
      return cloud(h).authKeys.filter((k) => describesJob(k.description, a.provisioningJobId));
    }

    it('after a create that timed out once Tailscale had made the key, one live key remains and the job records it', async () => {
      const a = await newAgent(h);
      const deps = impatientDeps();
      h.sim.control.setFaults([{ method: 'POST', route: KEYS_ROUTE, hang: true, afterCommit: true, times: 1 }]);
      const { hostname } = await prepared(a);
      const ctx = { operation: 'provision', agentId: a.agentId, instanceId: a.instanceId };

      const key = await mintJobAuthKey({ ...deps, guard: new OwnershipGuard({ ...deps, audit: deps.repositories.findings }) }, { provisioningJobId: a.provisioningJobId, hostname }, ctx, silentLogger);

      expect(h.sim.control.requestCounts()[`POST ${KEYS_ROUTE}`]).to.equal(2);
      const keys = jobKeys(a);
      expect(keys, 'the lost answer\'s key and the one returned').to.have.length(2);
      expect(keys.filter((k) => !k.invalid).map((k) => k.id), 'live keys').to.deep.equal([key.id]);
      const stray = keys.find((k) => k.id !== key.id)!;
      expect(stray.revoked, 'the key of the lost answer is revoked').to.be.a('string');
      expect((await rows(h, a)).job!.authKeyIds).to.deep.equal([key.id]);
      const audit = await h.ds.query(`SELECT reason FROM events WHERE to_status = 'auth_key_revoked'`);
      expect(audit.map((e: { reason: string }) => e.reason).join('\n')).to.include(stray.id);
    });

    it('a provision whose key create timed out after the commit finishes with every key spent or revoked', async () => {
      const a = await newAgent(h);
      h.sim.control.setFaults([{ method: 'POST', route: KEYS_ROUTE, hang: true, afterCommit: true, times: 1 }]);
      await new ProvisionWorkflow(impatientDeps()).provision({ provisioningJobId: a.provisioningJobId });

      const { job } = await expectProvisioned(a);
      const keys = jobKeys(a);
      expect(keys).to.have.length(2);
      expect(keys.filter((k) => !k.invalid), 'live keys').to.deep.equal([]);
      const used = keys.filter((k) => k.used);
      expect(used).to.have.length(1);
      expect(job.authKeyIds, 'the job records the key its device joined with').to.deep.equal([used[0].id]);
      expect(keys.find((k) => !k.used)?.revoked).to.be.a('string');
    });

    it('revokes a key the job never recorded (killed between the create and its record) when the job ends', async () => {
      const a = await newAgent(h);
      const real = h.repositories.provisioningJobs.addAuthKey.bind(h.repositories.provisioningJobs);
      const record = sinon.stub(h.repositories.provisioningJobs, 'addAuthKey').onFirstCall().rejects(new Error('worker killed'));
      record.callsFake(real);
      await expectRejection(run(a));
      const [unrecorded] = jobKeys(a);
      expect(unrecorded.invalid, 'left live by the crash').to.equal(false);
      expect((await rows(h, a)).job!.authKeyIds).to.deep.equal([]);

      await run(a);
      await expectProvisioned(a);
      const keys = jobKeys(a);
      expect(keys).to.have.length(2);
      expect(keys.filter((k) => !k.invalid)).to.deep.equal([]);
      expect(keys.find((k) => k.id === unrecorded.id)?.revoked, 'found by the job its description names').to.be.a('string');
    });

    it('describes each key by the job and the mint, within Tailscale\'s 50 characters', async () => {
      const a = await newAgent(h, 'a very long agent name that fills the whole hostname label');
      await run(a);
      const [key] = jobKeys(a);
      expect(key.description).to.match(/^tailfleet [a-z0-9-]{1,20} [0-9a-f]{12} [0-9a-f]{6}$/);
      expect(key.description.length).to.be.at.most(50);
      expect(key.description.split(' ')[2]).to.equal(a.provisioningJobId.replace(/-/g, '').slice(0, 12));
    });
  });

  describe('enrolment takes only a device with the fleet\'s tags', () => {
    async function impostorFor(a: AgentFixture) {
      const { hostname } = await prepared(a);
      return h.sim.control.createDevice({ hostname });
    }

    it('waits past an untagged device with the hostname and records the tagged one that joins, reporting the other', async () => {
      const a = await newAgent(h);
      const impostor = await impostorFor(a);
      await run(a);

      const { instance } = await expectProvisionedBeside(a, impostor.id);
      expect(instance.tailscaleDeviceId).to.not.equal(impostor.id);
      const findings = await h.repositories.findings.listByAgent(a.agentId);
      expect(findings.map((f) => [f.resourceType, f.resourceId, f.action])).to.deep.equal([['device', impostor.id, 'accept']]);
      expect(findings[0].missing.join(' ')).to.include('tags tag:agent');
    });

    it('does not accept an untagged device with the hostname when nothing else joins', async () => {
      const impatient = new ProvisionWorkflow({ ...h.workflowDeps, settings: { ...FAST_SETTINGS, enrollmentTimeoutMs: 200 } });
      h.sim.control.setTimings({ enrollDelayMs: 60_000 });
      const a = await newAgent(h);
      const impostor = await impostorFor(a);

      const err = await expectRejection(impatient.provision({ provisioningJobId: a.provisioningJobId }));
      expect(err).to.be.instanceOf(CloudApiError);
      expect(err.message).to.include(`untagged device ${impostor.id} has the hostname`);
      const { instance, job } = await rows(h, a);
      expect(instance.tailscaleDeviceId).to.equal(null);
      expect(instance.status).to.equal('provisioning');
      expect(job!.failedStep).to.equal('wait-enrollment');
      const findings = await h.repositories.findings.listByAgent(a.agentId);
      expect(findings.map((f) => f.resourceId)).to.deep.equal([impostor.id]);
      expect(cloud(h).devices.map((d) => d.id), 'the impostor is left alone').to.include(impostor.id);
    });
  });

  /** The hostname the provision gives the agent's device. */
  async function prepared(a: AgentFixture): Promise<{ hostname: string }> {
    const { agent, instance } = await rows(h, a);
    return { hostname: h.fleet.hostnameOf(instance, agent) };
  }

  /** Provisioned, with one device of ours beside the untagged one that shares its hostname. */
  async function expectProvisionedBeside(a: AgentFixture, impostorId: string) {
    const { agent, instance, job } = await rows(h, a);
    expect(agent.status).to.equal('active');
    expect(instance.status).to.equal('running');
    expect(job!.status).to.equal('succeeded');
    const ours = cloud(h).devices.filter((d) => d.id !== impostorId);
    expect(ours).to.have.length(1);
    expect(ours[0].tags).to.deep.equal(['tag:agent']);
    expect(instance.tailscaleDeviceId).to.equal(ours[0].id);
    return { instance };
  }

  it('refuses to run a rolled-back job again', async () => {
    const a = await newAgent(h);
    await h.teardown.rollback(a.provisioningJobId);
    const err = await expectRejection(run(a));
    expect(err).to.be.instanceOf(StateConflictError);
    expect(serverCreates(h)).to.equal(0);
  });
});
