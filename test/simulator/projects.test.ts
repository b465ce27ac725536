import { expect } from 'chai';
import { startSimulator, type RunningSimulator } from '../../src/simulator';

// Several Hetzner projects in one simulator: each token opens its own project (servers, snapshots,
// rate budget, server limit); capacity is the cloud's, shared by every project.

interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

describe('cloud simulator: projects and capacity', function () {
  let sim: RunningSimulator;

  async function hz(token: string, method: string, path: string, body?: unknown): Promise<Reply> {
    const res = await fetch(sim.hetznerUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
  }

  async function control(method: string, path: string, body?: unknown): Promise<Reply> {
    const res = await fetch(`${sim.url}/_sim${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, body: await res.json() };
  }

  const create = (token: string, name: string, extra: Record<string, unknown> = {}) =>
    hz(token, 'POST', '/servers', { name, server_type: 'cx22', image: 'ubuntu-24.04', location: 'fsn1', ...extra });

  before(async () => {
    sim = await startSimulator({
      timings: { actionDurationMs: 20, imageMsPerGb: 0, bootMs: 0, enrollDelayMs: 0, shutdownMs: 20, rateLimit: { limit: 5, refillPerSecond: 0 } },
      projects: [
        { name: 'alpha', token: 'token-alpha' },
        { name: 'beta', token: 'token-beta', maxServers: 2 },
      ],
    });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(() => sim.control.reset());

  it('keeps each project’s servers to itself; ids are unique across projects', async () => {
    const a = await create('token-alpha', 'same-name');
    const b = await create('token-beta', 'same-name');
    expect(a.status).to.equal(201);
    expect(b.status, 'a name is unique within a project only').to.equal(201);
    expect(a.body.server.id).to.not.equal(b.body.server.id);
    expect((await hz('token-alpha', 'GET', '/servers')).body.servers.map((s: any) => s.id)).to.deep.equal([a.body.server.id]);
    expect((await hz('token-alpha', 'GET', `/servers/${b.body.server.id}`)).status).to.equal(404);
    expect((await hz('token-alpha', 'DELETE', `/servers/${b.body.server.id}`)).status).to.equal(404);
    const state = sim.control.state();
    expect(state.servers.map((s) => [s.id, s._sim.project])).to.have.deep.members([
      [a.body.server.id, 'alpha'],
      [b.body.server.id, 'beta'],
    ]);
    const projects = (await control('GET', '/projects')).body.projects;
    expect(projects.map((p: any) => [p.name, p.servers, p.requests['POST /hetzner/v1/servers']])).to.deep.equal([
      ['alpha', 1, 1],
      ['beta', 1, 1],
    ]);
  });

  it('refuses an unknown token as Hetzner does', async () => {
    const res = await hz('sim-token', 'GET', '/servers');
    expect(res.status).to.equal(401);
    expect(res.body.error.code).to.equal('unauthorized');
  });

  it('answers 403 resource_limit_exceeded at the project’s server limit, with the official body, and creates nothing', async () => {
    expect((await create('token-beta', 'b1')).status).to.equal(201);
    expect((await create('token-beta', 'b2')).status).to.equal(201);
    const refused = await create('token-beta', 'b3');
    expect(refused.status).to.equal(403);
    expect(refused.body).to.deep.equal({
      error: { code: 'resource_limit_exceeded', message: 'project limit exceeded', details: { limits: [{ name: 'project_limit' }] } },
    });
    expect(sim.control.state().servers.filter((s) => s._sim.project === 'beta')).to.have.length(2);
    expect((await create('token-alpha', 'a1')).status, 'the other project has no limit').to.equal(201);
    // The limit can be raised (and is back to its configured value after a reset).
    expect((await control('PATCH', '/projects/beta', { maxServers: 3 })).body.project.maxServers).to.equal(3);
    expect((await create('token-beta', 'b3')).status).to.equal(201);
    expect((await control('PATCH', '/projects/nope', { maxServers: 3 })).status).to.equal(404);
    expect((await control('PATCH', '/projects/beta', { maxServers: -1 })).status).to.equal(400);
  });

  it('keeps a rate budget per project: a drained one does not slow the other', async () => {
    for (let i = 0; i < 5; i++) expect((await hz('token-alpha', 'GET', '/servers')).status).to.equal(200);
    const limited = await hz('token-alpha', 'GET', '/servers');
    expect(limited.status).to.equal(429);
    expect(limited.body.error.code).to.equal('rate_limit_exceeded');
    const other = await hz('token-beta', 'GET', '/servers');
    expect(other.status).to.equal(200);
    expect(other.headers.get('ratelimit-remaining')).to.equal('4');
  });

  it('marks a location or a type in a location sold out (412 resource_unavailable, nothing created) and back', async () => {
    expect((await control('PUT', '/capacity/sold-out/fsn1')).body.soldOut).to.deep.equal(['fsn1']);
    const refused = await create('token-alpha', 'x1');
    expect(refused.status).to.equal(412);
    expect(refused.body.error.code).to.equal('resource_unavailable');
    expect(refused.body.error).to.have.keys('code', 'message', 'details');
    expect((await create('token-beta', 'x1')).status, 'capacity is the cloud’s, not a project’s').to.equal(412);
    expect((await create('token-alpha', 'x2', { location: 'nbg1' })).status).to.equal(201);

    await control('DELETE', '/capacity/sold-out/fsn1');
    await control('PUT', '/capacity/sold-out/cx22@nbg1');
    expect((await create('token-alpha', 'x3')).status).to.equal(201);
    expect((await create('token-alpha', 'x4', { location: 'nbg1' })).status).to.equal(412);
    expect((await create('token-alpha', 'x5', { location: 'nbg1', server_type: 'cx32' })).status).to.equal(201);
    expect(sim.control.state().servers.map((s) => s.name).sort()).to.deep.equal(['x2', 'x3', 'x5']);

    expect((await control('PUT', '/capacity/sold-out/atlantis')).status).to.equal(400);
    expect((await control('PUT', '/capacity/sold-out/cx999@fsn1')).status).to.equal(400);
    sim.control.reset();
    expect(sim.control.state().soldOut).to.deep.equal([]);
  });

  it('creates a server without a primary IPv4 when public_net.enable_ipv4 is false', async () => {
    const res = await create('token-alpha', 'v6only', { public_net: { enable_ipv4: false, enable_ipv6: true } });
    expect(res.status).to.equal(201);
    expect(res.body.server.public_net.ipv4).to.equal(null);
    expect(res.body.server.public_net.ipv6.ip).to.be.a('string');
    const read = await hz('token-alpha', 'GET', `/servers/${res.body.server.id}`);
    expect(read.body.server.public_net.ipv4).to.equal(null);
  });

  it('scopes injected faults to a project', async () => {
    await fetch(`${sim.url}/_sim/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ project: 'alpha', status: 503 }]),
    });
    expect((await hz('token-alpha', 'GET', '/servers')).status).to.equal(503);
    expect((await hz('token-beta', 'GET', '/servers')).status).to.equal(200);
  });
});
