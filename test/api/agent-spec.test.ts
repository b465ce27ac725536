import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Agent } from '../../src/entities';
import { userDataParts } from '../../src/simulator/user-data';
import { waitFor } from '../pipeline/stack';
import { launchedSuite, operationEnded } from '../helpers/launched';
import { createSshKeys } from '../helpers/ssh-keys';

// Agent specs over real HTTP: the composition root's API (with its catalogue client), the workers,
// and the simulator as the cloud.

const OWN_CLOUD_CONFIG = ['#cloud-config', 'packages:', '  - htop', 'runcmd:', "  - 'echo workload > /etc/agent'", ''].join('\n');

describe('API: agent specs', function () {
  this.timeout(60_000);

  const stack = launchedSuite('agent_spec');

  const operationDone = (operationId: string) => operationEnded(stack.api, operationId);

  const agentCount = () => stack.suite.db.dataSource.getRepository(Agent).count();

  // Like Hetzner, the simulator refuses a create naming an SSH key the project does not have.
  let backupKeyId: string;
  before(async () => {
    const ids = await createSshKeys(stack.suite.sim, ['ops-key', 'backup-key']);
    backupKeyId = String(ids['backup-key']);
  });

  it('creates a server with its own type, location, image, SSH keys, labels and cloud-init, joined to the tailnet', async () => {
    const spec = {
      name: 'spec-box',
      serverType: 'cpx21',
      location: 'hel1',
      image: 'debian-12',
      sshKeys: ['ops-key', backupKeyId],
      labels: { customer: 'acme', 'example.com/tier': 'gold', empty: '' },
      userData: OWN_CLOUD_CONFIG,
    };
    const created = await stack.api.post('/v1/agents', spec);
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    expect(created.body.agent).to.deep.include({ labels: spec.labels });
    expect(created.body.agent.spec).to.deep.equal({
      serverType: 'cpx21',
      location: 'hel1',
      image: 'debian-12',
      sshKeys: ['ops-key', backupKeyId],
      placements: [{ location: 'hel1', serverType: 'cpx21' }],
      publicIpv4: null,
      userData: OWN_CLOUD_CONFIG,
      userDataSize: Buffer.byteLength(OWN_CLOUD_CONFIG),
      userDataSha256: createHash('sha256').update(OWN_CLOUD_CONFIG).digest('hex'),
      idle: null,
      reporter: false,
    });
    const done = await operationDone(created.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');

    const agent = await stack.api.get(`/v1/agents/${created.body.agent.id}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance).to.include({ status: 'running', serverType: 'cpx21', location: 'hel1', image: 'debian-12' });

    const server = stack.suite.sim.control.state().servers.find((s) => String(s.id) === agent.body.instance.serverId)!;
    expect(server.server_type.name).to.equal('cpx21');
    expect(server.datacenter.location.name).to.equal('hel1');
    expect(server.image?.name ?? server.image?.description).to.contain('debian-12');
    expect(server._sim.sshKeys).to.deep.equal(['ops-key', backupKeyId]);
    // The application's labels beside tailfleet's own.
    expect(server.labels).to.include({ customer: 'acme', 'example.com/tier': 'gold', empty: '', 'managed-by': 'tailfleet' });
    expect(server.labels['tailfleet-agent']).to.equal(created.body.agent.id);
    // Both the tailnet join (a script of its own) and the agent's own cloud-init, as a MIME multipart document.
    const parts = userDataParts(server._sim.userData!);
    expect(parts.map((p) => p.type)).to.deep.equal(['text/x-shellscript', 'text/cloud-config']);
    expect(parts[0]!.body).to.match(/tailscale up --auth-key=\S+ --hostname=spec-box/);
    expect(parts[1]!.body.trim()).to.equal(OWN_CLOUD_CONFIG.trim());
    expect(server._sim.enrollment.state).to.equal('enrolled');
    expect(stack.suite.sim.control.state().devices.map((d) => d.id)).to.include(agent.body.instance.tailscaleDeviceId);

    // The auth key is in the user data the cloud got, and nowhere in the database.
    const authKey = /--auth-key=(\S+)/.exec(parts[0]!.body)![1]!;
    const dump = await stack.suite.db.dataSource.query(
      `SELECT (SELECT json_agg(a)::text FROM agents a) || (SELECT json_agg(e)::text FROM events e) || (SELECT json_agg(o)::text FROM operations o) AS text`,
    );
    expect(dump[0].text).not.to.contain(authKey);
  });

  it('lets a shell script run beside the join, and the device still enrolls', async () => {
    const created = await stack.api.post('/v1/agents', { name: 'script-box', userData: '#!/bin/sh\necho hello > /tmp/hello\n' });
    expect(created.status).to.equal(201);
    const done = await operationDone(created.body.operation.id);
    expect(done.operation.status, done.operation.error).to.equal('succeeded');
    const agent = await stack.api.get(`/v1/agents/${created.body.agent.id}`);
    const server = stack.suite.sim.control.state().servers.find((s) => String(s.id) === agent.body.instance.serverId)!;
    expect(userDataParts(server._sim.userData!).map((p) => p.type)).to.deep.equal(['text/x-shellscript', 'text/x-shellscript']);
    expect(server._sim.enrollment.state).to.equal('enrolled');
    // Unset fields take the environment's defaults.
    expect(agent.body.agent.spec).to.include({ serverType: 'cx22', location: 'fsn1', image: 'ubuntu-24.04' });
  });

  it('refuses labels that break Hetzner\'s rules or name tailfleet\'s own, with 400 naming each, creating nothing', async () => {
    const before = await agentCount();
    const res = await stack.api.post('/v1/agents', {
      name: 'bad-labels',
      labels: { 'tailfleet-agent': 'mine', 'managed-by': 'me', '-bad': 'x', good: 'white space', ['k'.repeat(64)]: 'v' },
    });
    expect(res.status).to.equal(400);
    expect(res.body.type).to.equal('urn:tailfleet:problem:validation-error');
    const paths = res.body.errors.map((e: { path: string }) => e.path);
    expect(paths).to.include.members([
      'body.labels.tailfleet-agent',
      'body.labels.managed-by',
      'body.labels.-bad',
      'body.labels.good',
      `body.labels.${'k'.repeat(64)}`,
    ]);
    const userData = await stack.api.post('/v1/agents', { name: 'bad-user-data', userData: 'echo no shebang' });
    expect(userData.status).to.equal(400);
    expect(userData.body.errors[0].path).to.equal('body.userData');
    const tooBig = await stack.api.post('/v1/agents', { name: 'big-user-data', userData: `#!/bin/sh\n${'x'.repeat(32 * 1024 - 20)}` });
    expect(tooBig.status).to.equal(400);
    expect(tooBig.body.errors[0]).to.include({ path: 'body.userData' });
    expect(await agentCount()).to.equal(before);
  });

  it('refuses a server type or location the cloud does not offer with 422 naming it, before anything is created', async () => {
    const before = await agentCount();
    const serversBefore = stack.suite.sim.control.state().servers.length;
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ serverType: 'zz99' }, 'body.serverType', /unknown server type "zz99"/],
      [{ location: 'mars1' }, 'body.location', /unknown location "mars1"/],
      [{ serverType: 'cax11', location: 'ash' }, 'body.serverType', /not offered in location "ash"/],
      [{ serverType: 'ccx13', location: 'sin' }, 'body.serverType', /unavailable in location "sin"/],
    ];
    for (const [fields, path, message] of cases) {
      const res = await stack.api.post('/v1/agents', { name: 'nowhere', ...fields });
      expect(res.status, JSON.stringify(res.body)).to.equal(422);
      expect(res.body.type).to.equal('urn:tailfleet:problem:unavailable-server-spec');
      expect(res.body.errors[0].path).to.equal(path);
      expect(res.body.errors[0].message).to.match(message);
    }
    expect(await agentCount()).to.equal(before);
    expect(stack.suite.sim.control.state().servers.length).to.equal(serversBefore);
  });

  it('filters agents by label', async () => {
    const res = await stack.api.get('/v1/agents?label=customer=acme');
    expect(res.status).to.equal(200);
    expect(res.body.items.map((a: { name: string }) => a.name)).to.deep.equal(['spec-box']);
    const both = await stack.api.get('/v1/agents?label=customer=acme&label=example.com/tier=gold&status=active');
    expect(both.body.items.map((a: { name: string }) => a.name)).to.deep.equal(['spec-box']);
    expect((await stack.api.get('/v1/agents?label=customer=acme&label=empty=x')).body.items).to.deep.equal([]);
    expect((await stack.api.get('/v1/agents?name=script-box')).body.items.map((a: { name: string }) => a.name)).to.deep.equal(['script-box']);
    const bad = await stack.api.get('/v1/agents?label=nokey&label=-x=1');
    expect(bad.status).to.equal(400);
    expect(bad.body.errors.map((e: { path: string }) => e.path)).to.deep.equal(['query.label', 'query.label']);
  });
});

describe('API: names, quotas, reprovision and cancel', function () {
  this.timeout(60_000);

  const MAX = 4;
  // API only: operations stay queued until a worker process is launched.
  const stack = launchedSuite('agent_quota', { env: { ROLE: 'api', MAX_AGENTS: String(MAX) } });

  const liveAgents = async () =>
    Number((await stack.suite.db.dataSource.query(`SELECT count(*) AS n FROM agents WHERE status <> 'destroyed'`))[0].n);

  let firstId: string;
  let firstOperationId: string;

  it('answers a second create of a live name with 409 naming the existing agent', async () => {
    const first = await stack.api.post('/v1/agents', { name: 'unique-1' });
    expect(first.status).to.equal(201);
    firstId = first.body.agent.id;
    firstOperationId = first.body.operation.id;
    const second = await stack.api.post('/v1/agents', { name: 'unique-1', serverType: 'cpx11' });
    expect(second.status).to.equal(409);
    expect(second.body).to.include({ type: 'urn:tailfleet:problem:name-taken', agentId: firstId });
    expect(await liveAgents()).to.equal(1);
    // The partial unique index holds even for writers that skip the API.
    const raw = await stack.suite.db.dataSource
      .query(`INSERT INTO agents (name) VALUES ('unique-1')`)
      .then(() => 'inserted', (err: { constraint?: string; driverError?: { constraint?: string } }) => err.driverError?.constraint ?? err.constraint);
    expect(raw).to.equal('uq_agents_live_name');
  });

  it('keeps concurrent creates within MAX_AGENTS: the rest get 409 quota-exceeded and nothing is written for them', async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => stack.api.post('/v1/agents', { name: `burst-${i}` })));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses.filter((s) => s === 201)).to.have.length(MAX - 1);
    const refused = answers.filter((a) => a.status === 409);
    expect(refused).to.have.length(8 - (MAX - 1));
    for (const r of refused) expect(r.body).to.include({ type: 'urn:tailfleet:problem:quota-exceeded', limit: MAX });
    expect(await liveAgents()).to.equal(MAX);
  });

  it('cancels a queued provision: operation cancelled, job removed, agent in error; a second cancel is 409', async () => {
    const res = await stack.api.post(`/v1/operations/${firstOperationId}/cancel`);
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.operation).to.include({ id: firstOperationId, status: 'cancelled' });
    const job = (await stack.api.get(`/v1/operations/${firstOperationId}`)).body.job;
    expect(job.state).to.equal('not_retained');
    const agent = await stack.api.get(`/v1/agents/${firstId}`);
    expect(agent.body.agent.status).to.equal('error');
    expect(agent.body.instance.status).to.equal('failed');

    const again = await stack.api.post(`/v1/operations/${firstOperationId}/cancel`);
    expect(again.status).to.equal(409);
    expect(again.body.type).to.equal('urn:tailfleet:problem:state-conflict');
    expect((await stack.api.post('/v1/operations/00000000-0000-4000-8000-000000000000/cancel')).status).to.equal(404);
  });

  it('reprovisions an agent in error with the same spec, and only one in error', async () => {
    const draft = (await stack.api.get('/v1/agents?limit=100')).body.items.find((a: { id: string }) => a.id !== firstId);
    const refused = await stack.api.post(`/v1/agents/${draft.id}/reprovision`);
    expect(refused.status).to.equal(409);
    expect(refused.body.detail).to.match(/only an agent in error/);
    expect((await stack.api.post('/v1/agents/00000000-0000-4000-8000-000000000000/reprovision')).status).to.equal(404);

    const res = await stack.api.post(`/v1/agents/${firstId}/reprovision`, undefined, { 'idempotency-key': 'again-1' });
    expect(res.status, JSON.stringify(res.body)).to.equal(202);
    expect(res.body.agent.status).to.equal('provisioning');
    expect(res.body.instance.status).to.equal('pending');
    const replay = await stack.api.post(`/v1/agents/${firstId}/reprovision`, undefined, { 'idempotency-key': 'again-1' });
    expect(replay.status).to.equal(200);
    expect(replay.body.operation.id).to.equal(res.body.operation.id);
    expect((await stack.api.post(`/v1/agents/${firstId}/reprovision`)).status).to.equal(409);

    // A worker process carries it out.
    await stack.suite.launch({ env: { ROLE: 'worker' } });
    await waitFor('the reprovisioned agent to run', async () => {
      const agent = await stack.api.get(`/v1/agents/${firstId}`);
      return agent.body.agent.status === 'active' ? agent : undefined;
    });
    const server = stack.suite.sim.control.state().servers.find((s) => s.labels['tailfleet-agent'] === firstId)!;
    expect(server._sim.enrollment.state).to.equal('enrolled');
  });
});
