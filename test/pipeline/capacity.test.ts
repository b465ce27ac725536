import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import type { SimProjectInput } from '../../src/simulator';
import { operationEnded } from '../helpers/launched';
import { apiClient, createSuite, deleteRedisPrefix, TINY_TIMINGS, type ApiClient, type Suite } from './stack';

// Capacity the whole way: HTTP API → queues → workers → the simulator over HTTP, with two Hetzner
// projects (each its own token, servers, rate budget and limit) and places that sell out.

const PROJECTS: SimProjectInput[] = [
  { name: 'alpha', token: 'token-alpha' },
  { name: 'beta', token: 'token-beta' },
];
// Only the catalogue and price reads (the same in every project) may go to the first project for an agent of another.
const PROJECT_SCOPED = /\/(servers|images|actions)\b/;

describe('pipeline: placements, several Hetzner projects, IPv6-only', function () {
  this.timeout(90_000);
  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;

  before(async () => {
    suite = await createSuite('pipeline_capacity', TINY_TIMINGS, { projects: PROJECTS });
    tf = await suite.launch({
      env: {
        RECONCILE_INTERVAL_SECONDS: '0',
        HETZNER_PLACEMENTS: 'fsn1:cx22,nbg1:cx22,hel1:cx32',
        PLACEMENT_COOLDOWN_SECONDS: '60',
      },
    });
    api = apiClient(tf.url!, suite.apiToken);
  });
  after(async () => {
    await suite?.close();
  });
  beforeEach(async () => {
    suite.sim.control.reset(TINY_TIMINGS);
    // The cooldowns are the fleet's memory of the cloud; a fresh cloud starts without them.
    await deleteRedisPrefix(`${suite.prefix}:capacity`);
  });

  const control = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${suite.sim.url}/_sim${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    expect(res.status, `${method} ${path}`).to.equal(200);
    return (await res.json()) as any;
  };

  const finished = async (operationId: string) => (await operationEnded(api, operationId, { timeoutMs: 30_000 })).operation;

  async function newAgent(body: Record<string, unknown>) {
    const created = await api.post('/v1/agents', body);
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    const op = await finished(created.body.operation.id);
    expect(op.status, op.error).to.equal('succeeded');
    return (await api.get(`/v1/agents/${created.body.agent.id}`)).body;
  }

  async function command(agentId: string, verb: string) {
    const res = await api.post(`/v1/agents/${agentId}/${verb}`);
    expect(res.status, JSON.stringify(res.body)).to.equal(202);
    const op = await finished(res.body.operation.id);
    expect(op.status, `${verb}: ${op.error}`).to.equal('succeeded');
  }

  const serversOf = (agentId: string) => suite.sim.control.state().servers.filter((s) => s.labels['tailfleet-agent'] === agentId);
  const creates = (project: string, projects: any[]) => projects.find((p) => p.name === project).requests['POST /hetzner/v1/servers'] ?? 0;

  // First, on an empty database: with nothing counted anywhere the projects are tried in their configured order.
  it('moves to the next project when one is at its server limit, and keeps every later call of the agent in that project', async () => {
    // alpha holds one server already and may have one: full.
    suite.sim.control.createServer({ name: 'someone-else', project: 'alpha' });
    await control('PATCH', '/projects/alpha', { maxServers: 1 });
    const view = await newAgent({ name: 'full-project' });
    expect(view.instance.hetznerProject).to.equal('beta');
    expect(view.instance.placementRefusals.map((r: any) => [r.project, r.status, r.code])).to.deep.equal([['alpha', 403, 'resource_limit_exceeded']]);
    expect(serversOf(view.agent.id).map((s) => s._sim.project)).to.deep.equal(['beta']);
    const cost = (await api.get('/v1/fleet/cost')).body;
    const alpha = cost.projects.find((p: any) => p.name === 'alpha');
    const beta = cost.projects.find((p: any) => p.name === 'beta');
    expect(alpha).to.include({ full: true, servers: 0 });
    expect(alpha.refusals.byCode).to.deep.include({ resource_limit_exceeded: 1 });
    expect(beta).to.include({ full: false, servers: 1 });
    expect(beta.monthly).to.be.greaterThan(0);
    expect(beta.budget.remaining).to.be.a('number');

    // Every operation on the agent goes to beta, never to alpha.
    await control('POST', '/requests/reset');
    const agentId = view.agent.id;
    await command(agentId, 'stop');
    await command(agentId, 'start');
    // A reboot is seen by the device dropping off the tailnet and coming back: with a 20 ms boot a
    // loaded machine's poll can miss the drop entirely (as test/lifecycle/reboot.test.ts says too).
    suite.sim.control.setTimings({ bootMs: 300 });
    await command(agentId, 'reboot');
    suite.sim.control.setTimings({ bootMs: TINY_TIMINGS.bootMs });
    await command(agentId, 'hibernate');
    expect(suite.sim.control.state().images.length).to.equal(1);
    await command(agentId, 'wake');
    const woken = (await api.get(`/v1/agents/${agentId}`)).body;
    expect(woken.instance.hetznerProject).to.equal('beta');
    expect(serversOf(agentId).map((s) => s._sim.project)).to.deep.equal(['beta']);
    const destroyed = await api.post(`/v1/agents/${agentId}/destroy`);
    expect(destroyed.status, JSON.stringify(destroyed.body)).to.equal(202);
    expect((await finished(destroyed.body.operation.id)).status).to.equal('succeeded');
    expect(serversOf(agentId)).to.deep.equal([]);

    const projects = (await control('GET', '/projects')).projects;
    const alphaCalls = Object.keys(projects.find((p: any) => p.name === 'alpha').requests).filter((k) => PROJECT_SCOPED.test(k));
    expect(alphaCalls, 'calls for a beta agent that went to alpha').to.deep.equal([]);
    const betaCalls = Object.keys(projects.find((p: any) => p.name === 'beta').requests);
    for (const route of ['POST /hetzner/v1/servers/{id}/actions/shutdown', 'POST /hetzner/v1/servers/{id}/actions/create_image', 'DELETE /hetzner/v1/servers/{id}']) {
      expect(betaCalls).to.include(route);
    }
  });

  it('lands in the second placement when the first is sold out, leaving no server in the first, and says so', async () => {
    await control('PUT', '/capacity/sold-out/fsn1');
    const view = await newAgent({ name: 'sold-out-1' });
    expect(view.instance.location).to.equal('nbg1');
    expect(view.instance.serverType).to.equal('cx22');
    expect(view.agent.spec.placements).to.deep.equal([
      { location: 'fsn1', serverType: 'cx22' },
      { location: 'nbg1', serverType: 'cx22' },
      { location: 'hel1', serverType: 'cx32' },
    ]);
    expect(view.instance.placementRefusals.map((r: any) => [r.location, r.serverType, r.status, r.code])).to.deep.equal([
      ['fsn1', 'cx22', 412, 'resource_unavailable'],
    ]);
    const servers = serversOf(view.agent.id);
    expect(servers.map((s) => s.location.name)).to.deep.equal(['nbg1']);
    expect(suite.sim.control.state().servers.filter((s) => s.location.name === 'fsn1')).to.deep.equal([]);

    const events = (await api.get(`/v1/agents/${view.agent.id}/events`)).body.items.map((e: any) => e.reason as string);
    expect(events.some((r: string) => /^placement refused: fsn1\/cx22 in project \w+: 412 resource_unavailable .*; trying nbg1\/cx22/.test(r)), events.join('\n')).to.equal(true);
    expect(events.some((r: string) => /^placed in nbg1\/cx22 in project \w+ after 1 refused placement$/.test(r))).to.equal(true);

    // The refusal is remembered fleet-wide: the next provision goes straight to nbg1, one create.
    await control('POST', '/requests/reset');
    const second = await newAgent({ name: 'sold-out-2' });
    expect(second.instance.location).to.equal('nbg1');
    expect(second.instance.placementRefusals).to.deep.equal([]);
    const counts = (await control('GET', '/projects')).projects;
    expect(creates('alpha', counts) + creates('beta', counts)).to.equal(1);
  });

  it('falls back from a type sold out in a location to the next placement, and fails over nothing when none is left', async () => {
    await control('PUT', '/capacity/sold-out/fsn1');
    await control('PUT', '/capacity/sold-out/nbg1');
    await control('PUT', '/capacity/sold-out/cx32@hel1');
    const created = await api.post('/v1/agents', { name: 'nowhere' });
    expect(created.status).to.equal(201);
    const op = await finished(created.body.operation.id);
    expect(op.status).to.equal('failed');
    expect(op.error).to.match(/No placement has capacity/);
    expect(suite.sim.control.state().servers).to.deep.equal([]);
  });

  it('wakes from a snapshot at the next placement when the agent’s place sold out meanwhile, in the same project', async () => {
    const view = await newAgent({ name: 'sleepy' });
    const agentId = view.agent.id;
    const project = view.instance.hetznerProject;
    expect(view.instance.location).to.equal('fsn1');
    await command(agentId, 'hibernate');
    await control('PUT', '/capacity/sold-out/fsn1');
    await command(agentId, 'wake');
    const woken = (await api.get(`/v1/agents/${agentId}`)).body;
    expect(woken.instance).to.include({ status: 'running', location: 'nbg1', hetznerProject: project });
    expect(woken.instance.placementRefusals.map((r: any) => [r.location, r.code])).to.deep.equal([['fsn1', 'resource_unavailable']]);
    expect(serversOf(agentId).map((s) => [s.location.name, s._sim.project])).to.deep.equal([['nbg1', project]]);
  });

  it('creates one server when a create’s answer is lost: the retry looks in the project it chose', async () => {
    // The create happens, its answer does not arrive: the job's retry must find it, not make another.
    await fetch(`${suite.sim.url}/_sim/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ method: 'POST', route: '/hetzner/v1/servers', status: 503, afterCommit: true, times: 1 }]),
    });
    const view = await newAgent({ name: 'lost-answer' });
    const servers = serversOf(view.agent.id);
    expect(servers).to.have.length(1);
    expect(servers[0]._sim.project).to.equal(view.instance.hetznerProject);
    expect(String(servers[0].id)).to.equal(view.instance.serverId);
  });

  it('keeps one project’s operations going while the other answers nothing but 429', async () => {
    const inBeta = await newAgent({ name: 'storm-beta' });
    const betaProject = inBeta.instance.hetznerProject as string;
    const stormed = betaProject === 'alpha' ? 'beta' : 'alpha';
    await fetch(`${suite.sim.url}/_sim/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ project: stormed, status: 429 }]),
    });
    try {
      // A read in the stormed project through its own client: refused, and that client waits.
      await tf.projects.get(stormed).client.getServer(1).catch(() => undefined);
      const stormedState = tf.projects.get(stormed).client.rateLimiter.state();
      expect(stormedState.blockedUntil).to.be.greaterThan(Date.now() - 1000);

      await command(inBeta.agent.id, 'stop');
      await command(inBeta.agent.id, 'start');
      expect(tf.projects.get(betaProject).client.rateLimiter.state().blockedUntil, 'the other project never waited').to.equal(0);
      const projects = (await control('GET', '/projects')).projects;
      expect(projects.find((p: any) => p.name === betaProject).requests['POST /hetzner/v1/servers/{id}/actions/shutdown']).to.be.greaterThan(0);
    } finally {
      await fetch(`${suite.sim.url}/_sim/faults`, { method: 'DELETE' });
    }
  });

  it('creates an IPv6-only server for publicIpv4: false, and bills no primary IPv4 for it', async () => {
    const view = await newAgent({ name: 'v6-only', publicIpv4: false, placements: [{ location: 'hel1', serverType: 'cx22' }] });
    expect(view.agent.spec.publicIpv4).to.equal(false);
    const [server] = serversOf(view.agent.id);
    expect(server.public_net.ipv4).to.equal(null);
    expect(server.public_net.ipv6).to.not.equal(null);
    expect(view.instance.serverIp).to.equal(null);
    expect(view.agent.cost.primaryIpv4).to.equal(0);
    expect(view.agent.cost.server).to.be.greaterThan(0);
  });

  it('refuses placements beside location, an empty or repeated list, and a non-boolean publicIpv4, creating nothing', async () => {
    for (const body of [
      { name: 'bad-1', location: 'fsn1', placements: [{ location: 'nbg1', serverType: 'cx22' }] },
      { name: 'bad-2', placements: [] },
      { name: 'bad-3', placements: [{ location: 'fsn1', serverType: 'cx22' }, { location: 'fsn1', serverType: 'cx22' }] },
      { name: 'bad-4', placements: [{ location: 'fsn1' }] },
      { name: 'bad-5', publicIpv4: 'no' },
      { name: 'bad-6', placements: [{ location: 'atlantis', serverType: 'cx22' }] },
    ]) {
      const res = await api.post('/v1/agents', body);
      expect(res.status, JSON.stringify(body)).to.be.oneOf([400, 422]);
      expect(res.body.errors?.length ?? 1, JSON.stringify(res.body)).to.be.greaterThan(0);
    }
    expect((await api.get('/v1/agents?name=bad-1')).body.items).to.deep.equal([]);
  });

  describe('two fleets sharing two projects', () => {
    let other: Suite;
    let otherTf: Tailfleet;
    let otherApi: ApiClient;

    before(async () => {
      other = await createSuite('pipeline_capacity_b', TINY_TIMINGS, { projects: PROJECTS, sim: suite.sim });
      otherTf = await other.launch({ env: { FLEET_NAME: 'blue', RECONCILE_INTERVAL_SECONDS: '0', RECONCILE_ORPHANS: 'delete', RECONCILE_GRACE_SECONDS: '0' } });
      otherApi = apiClient(otherTf.url!, other.apiToken);
    });
    after(async () => {
      await other?.close();
    });

    it('never lists, reconciles or deletes the other fleet’s machines, in either project', async () => {
      // One agent of ours in each project (the other one at its limit each time), then the other
      // fleet's agent, its reconcile (deleting orphans) and its destroy.
      await control('PATCH', '/projects/beta', { maxServers: 0 });
      const a = await newAgent({ name: 'ours-1' });
      await control('PATCH', '/projects/beta', { maxServers: null });
      await control('PATCH', '/projects/alpha', { maxServers: 1 });
      const b = await newAgent({ name: 'ours-2' });
      expect([a.instance.hetznerProject, b.instance.hetznerProject]).to.deep.equal(['alpha', 'beta']);
      await control('PATCH', '/projects/alpha', { maxServers: null });

      const created = await otherApi.post('/v1/agents', { name: 'theirs-1' });
      expect(created.status).to.equal(201);
      expect((await operationEnded(otherApi, created.body.operation.id, { timeoutMs: 30_000 })).operation.status).to.equal('succeeded');
      const pass = await otherApi.post('/v1/reconcile');
      await operationEnded(otherApi, pass.body.operation.id, { timeoutMs: 30_000 });
      const report = (await otherApi.get('/v1/reconcile')).body.report;
      expect(report.orphanServers).to.deep.equal([]);
      expect(report.observed.servers, 'only its own server, of both projects').to.equal(1);
      const destroyed = await otherApi.post(`/v1/agents/${created.body.agent.id}/destroy`);
      expect((await operationEnded(otherApi, destroyed.body.operation.id, { timeoutMs: 30_000 })).operation.status).to.equal('succeeded');

      for (const view of [a, b]) {
        expect(serversOf(view.agent.id).map((s) => s._sim.project), view.agent.name).to.deep.equal([view.instance.hetznerProject]);
      }
      // And ours sees both of its servers across the projects, none of theirs.
      const ourPass = await api.post('/v1/reconcile');
      await finished(ourPass.body.operation.id);
      const ours = (await api.get('/v1/reconcile')).body.report;
      expect(ours.observed.servers).to.equal(2);
      expect(ours.orphanServers).to.deep.equal([]);
    });
  });
});
