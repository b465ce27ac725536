import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';

// Pools over real HTTP: the app and its workers built by the composition root, the cloud the
// simulator. The pool policy's background passes are off; each test runs passes itself (runOnce),
// with the policy's clock under its control for the schedules.

const CREATE_SERVER = 'POST /hetzner/v1/servers';
const POWER_ON = 'POST /hetzner/v1/servers/{id}/actions/poweron';
const UPDATE_SERVER = 'PUT /hetzner/v1/servers/{id}';

describe('pools', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  // The pool policy's clock: the system's unless a test sets it.
  let clock: Date | null = null;

  before(async () => {
    suite = await createSuite('pools');
    tf = await suite.launch({ env: { POLICY_INTERVAL_SECONDS: '3600' }, overrides: { poolPolicy: false, poolClock: () => clock ?? new Date() } });
    api = apiClient(tf.url!, suite.apiToken);
  });
  after(async () => {
    await suite?.close();
  });

  const requests = (key: string) => suite.sim.control.requestCounts()[key] ?? 0;
  const pass = () => tf.poolPolicy!.runOnce();
  const pool = async (name: string) => (await api.get(`/v1/pools/${name}`)).body;
  const serverOf = (agentId: string) => suite.sim.control.state().servers.find((s) => s.labels['tailfleet-agent'] === agentId);

  /** Runs policy passes until the pool has `ready` standbys ready (and nothing starting). */
  async function stocked(name: string, ready: number) {
    return waitFor(`pool ${name} with ${ready} ready`, async () => {
      await pass();
      const p = await pool(name);
      return p.counts.ready === ready && p.counts.starting === 0 && p;
    }, { timeoutMs: 30_000, intervalMs: 100 });
  }

  it('creates a pool and the policy provisions it up to minReady, each refill an operation of system with reason "pool refill"', async () => {
    const created = await api.post('/v1/pools', { name: 'web', minReady: 2, standby: 'running', spec: { labels: { role: 'standby' } } });
    expect(created.status).to.equal(201);
    expect(created.headers.get('location')).to.equal('/v1/pools/web');
    expect(created.body).to.deep.include({ name: 'web', minReady: 2, standby: 'running', maxSize: null, schedules: [] });
    expect(created.body.counts).to.deep.equal({ ready: 0, starting: 0, claimed: 0 });

    const first = await pass();
    expect(first.refills).to.equal(2);
    expect((await pool('web')).counts.starting).to.equal(2);
    // A second pass while they provision asks for nothing more: standbys being started count.
    expect((await pass()).refills).to.equal(0);

    const p = await stocked('web', 2);
    expect(p.counts.claimed).to.equal(0);
    const list = await api.get('/v1/pools');
    expect(list.body.items.map((x: { name: string }) => x.name)).to.deep.equal(['web']);

    const provisions = await api.get('/v1/operations?type=provision');
    const refills = provisions.body.items.filter((o: { requestedBy: string }) => o.requestedBy === 'system');
    expect(refills).to.have.length(2);
    const events = await api.get(`/v1/agents/${refills[0].agentId}/events`);
    expect(events.body.items.find((e: { entityType: string; fromStatus: string | null }) => e.entityType === 'operation' && e.fromStatus === null).reason).to.equal('provision requested: pool refill');
  });

  it('claims a running standby without creating a server: renames it, labels its server, records leaseSeconds', async () => {
    await stocked('web', 2);
    suite.sim.control.resetRequestCounts();
    const res = await api.post('/v1/pools/web/claim?wait=30', { name: 'ci-runner-1', labels: { team: 'build' }, leaseSeconds: 600 });
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.from).to.equal('running');
    expect(res.body.preparing).to.equal(null);
    expect(res.body.leaseSeconds).to.equal(600);
    expect(res.body.operation).to.include({ type: 'claim', status: 'succeeded' });
    expect(res.body.agent).to.deep.include({ name: 'ci-runner-1', status: 'active', labels: { team: 'build' } });
    expect(requests(CREATE_SERVER)).to.equal(0);
    expect(requests(POWER_ON)).to.equal(0);
    expect(requests(UPDATE_SERVER)).to.equal(1);

    const server = serverOf(res.body.agent.id)!;
    expect(server.labels).to.include({ team: 'build', 'managed-by': 'tailfleet', 'tailfleet-agent': res.body.agent.id });
    expect(server.labels).not.to.have.property('role');

    const after = await pool('web');
    expect(after.counts).to.deep.equal({ ready: 1, starting: 0, claimed: 1 });
    // The claim is an operation like any other: its events carry who asked and why.
    const events = await api.get(`/v1/agents/${res.body.agent.id}/events`);
    const claimEvents = events.body.items.filter((e: { operationId: string }) => e.operationId === res.body.operation.id);
    expect(claimEvents.map((e: { toStatus: string }) => e.toStatus)).to.deep.equal(['queued', 'running', 'succeeded']);
    expect(claimEvents[0].reason).to.equal('claim from pool web requested (running standby)');
    expect(claimEvents[0].actor).to.equal('bootstrap');
    const op = await api.get(`/v1/operations/${res.body.operation.id}`);
    expect(op.body.operation.type).to.equal('claim');
    // leaseSeconds became a lease held by the claim.
    const leases = await api.get(`/v1/agents/${res.body.agent.id}/leases`);
    expect(leases.body.items).to.have.length(1);
    expect(leases.body.items[0].holder).to.equal(`claim ${res.body.operation.id}`);
    const left = Date.parse(leases.body.items[0].expiresAt) - Date.now();
    expect(left).to.be.within(500_000, 600_000);
  });

  it('never claims a standby that a live lease holds', async () => {
    const standbys = await stocked('web', 2);
    expect(standbys.counts.ready).to.equal(2);
    const agents = (await api.get('/v1/agents?status=active&limit=100')).body.items.filter((a: { name: string }) => a.name.startsWith('web-'));
    const held = agents[0];
    expect((await api.post(`/v1/agents/${held.id}/leases`, { holder: 'someone', ttlSeconds: 300 })).status).to.equal(201);
    const first = await api.post('/v1/pools/web/claim', {});
    expect(first.body.from).to.equal('running');
    expect(first.body.agent.id).not.to.equal(held.id);
    const second = await api.post('/v1/pools/web/claim', {});
    expect(second.body.from).to.equal('provision');
    for (const c of [first, second]) await api.get(`/v1/operations/${c.body.operation.id}?wait=30`);
    const lease = (await api.get(`/v1/agents/${held.id}/leases`)).body.items[0];
    expect((await api.call('DELETE', `/v1/agents/${held.id}/leases/${lease.id}`)).status).to.be.oneOf([200, 204]);
  });

  it('never hands the same standby to two concurrent claims; a claim that finds none ready provisions one (202)', async () => {
    await api.post('/v1/pools', { name: 'race', minReady: 2, standby: 'running' });
    await stocked('race', 2);
    const claims = await Promise.all([1, 2, 3].map(() => api.post('/v1/pools/race/claim', {})));
    expect(claims.map((c) => c.status)).to.deep.equal([202, 202, 202]);
    const ids = claims.map((c) => c.body.agent.id);
    expect(new Set(ids).size).to.equal(3);
    expect(claims.map((c) => c.body.from).sort()).to.deep.equal(['provision', 'running', 'running']);
    const cold = claims.find((c) => c.body.from === 'provision')!;
    expect(cold.body.preparing).to.include({ type: 'provision' });
    for (const c of claims) {
      const done = await api.get(`/v1/operations/${c.body.operation.id}?wait=30`);
      expect(done.body.operation.status, JSON.stringify(done.body.operation)).to.equal('succeeded');
    }
    expect((await pool('race')).counts).to.deep.equal({ ready: 0, starting: 0, claimed: 3 });
  });

  it('answers a repeated claim with the same Idempotency-Key with the claim it made, once', async () => {
    await stocked('race', 2);
    const key = { 'idempotency-key': 'claim-job-77' };
    const first = await api.post('/v1/pools/race/claim', { leaseSeconds: 120 }, key);
    expect(first.status).to.equal(202);
    const again = await api.post('/v1/pools/race/claim', { leaseSeconds: 120 }, key);
    expect(again.status).to.equal(200);
    expect(again.body.operation.id).to.equal(first.body.operation.id);
    expect(again.body.agent.id).to.equal(first.body.agent.id);
    expect(again.body.leaseSeconds).to.equal(120);
    const elsewhere = await api.post('/v1/pools/web/claim', {}, key);
    expect(elsewhere.status).to.equal(422);
    expect((await api.get(`/v1/operations/${first.body.operation.id}?wait=30`)).body.operation.status).to.equal('succeeded');
    const claims = (await api.get('/v1/operations?type=claim&limit=100')).body.items.filter((o: { idempotencyKey: string | null }) => o.idempotencyKey === 'claim-job-77');
    expect(claims).to.have.length(1);
  });

  it('claims a stopped standby by powering it on', async () => {
    await api.post('/v1/pools', { name: 'cold', minReady: 1, standby: 'stopped' });
    const p = await stocked('cold', 1);
    expect(p.counts.ready).to.equal(1);
    suite.sim.control.resetRequestCounts();
    const res = await api.post('/v1/pools/cold/claim?wait=30', { labels: { owner: 'me' } });
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.from).to.equal('stopped');
    expect(res.body.preparing).to.include({ type: 'start' });
    expect(res.body.operation.status).to.equal('succeeded');
    expect(requests(CREATE_SERVER)).to.equal(0);
    expect(requests(POWER_ON)).to.equal(1);
    const agent = await api.get(`/v1/agents/${res.body.agent.id}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance.status).to.equal('running');
    expect(serverOf(res.body.agent.id)!.labels).to.include({ owner: 'me' });
  });

  it('claims a hibernated standby by waking it', async () => {
    await api.post('/v1/pools', { name: 'sleepy', minReady: 1, standby: 'hibernated' });
    await stocked('sleepy', 1);
    const standby = (await api.get('/v1/agents?status=hibernated')).body.items;
    expect(standby).to.have.length(1);
    const res = await api.post('/v1/pools/sleepy/claim?wait=30', { name: 'woken-1' });
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    expect(res.body.from).to.equal('hibernated');
    expect(res.body.preparing).to.include({ type: 'wake' });
    expect(res.body.agent).to.include({ id: standby[0].id, name: 'woken-1', status: 'active' });
    expect(res.body.operation.status).to.equal('succeeded');
    const agent = await api.get(`/v1/agents/${res.body.agent.id}`);
    expect(agent.body.instance.status).to.equal('running');
    expect(serverOf(res.body.agent.id)!.status).to.equal('running');
    await api.call('DELETE', '/v1/pools/sleepy');
  });

  it('delete destroys the standbys and leaves claimed agents alone', async () => {
    const before = await stocked('web', 2);
    expect(before.counts).to.deep.equal({ ready: 2, starting: 0, claimed: 3 });
    const claimed = (await api.get('/v1/agents?name=ci-runner-1')).body.items[0];
    const res = await api.call('DELETE', '/v1/pools/web');
    expect(res.status).to.equal(200);
    expect(res.body.destroying).to.have.length(2);
    const destroyedIds: string[] = res.body.destroying.map((o: { agentId: string }) => o.agentId);
    expect(destroyedIds).not.to.include(claimed.id);
    for (const o of res.body.destroying) expect((await api.get(`/v1/operations/${o.id}?wait=30`)).body.operation.status).to.equal('succeeded');
    for (const id of destroyedIds) {
      expect((await api.get(`/v1/agents/${id}`)).body.agent.status).to.equal('destroyed');
      expect(serverOf(id)).to.equal(undefined);
    }
    expect((await api.get(`/v1/agents/${claimed.id}`)).body.agent.status).to.equal('active');
    expect(serverOf(claimed.id)).to.not.equal(undefined);
    expect((await api.get('/v1/pools/web')).status).to.equal(404);
  });

  it('follows a schedule in its time zone across a daylight-saving change', async () => {
    // 08:00 and 18:00 in Berlin. On 29 March 2026 Berlin moves from UTC+1 to UTC+2 at 02:00, so
    // that day 08:00 is 06:00 UTC (the day before, 07:00 UTC).
    const created = await api.post('/v1/pools', {
      name: 'office',
      minReady: 0,
      standby: 'running',
      maxSize: 3,
      schedules: [
        { cron: '0 8 * * *', timezone: 'Europe/Berlin', minReady: 1 },
        { cron: '0 18 * * *', timezone: 'Europe/Berlin', minReady: 0 },
      ],
    });
    expect(created.status).to.equal(201);
    const lead = await tf.poolPolicy!.readyLeadMs(created.body as never);
    expect(lead).to.be.greaterThan(2).and.lessThan(60_000);
    try {
      clock = new Date(Date.parse('2026-03-29T05:58:00Z') - lead); // 07:58 CEST: the evening schedule holds
      expect((await pass()).refills).to.equal(0);
      clock = new Date(Date.parse('2026-03-29T06:00:01Z') - lead); // 08:00:01 CEST, looking ahead by the lead
      expect((await pass()).refills).to.equal(1);
      await stocked('office', 1);
      // Within the lead of 18:00 CEST: looking ahead raises a pool, it never shrinks one early.
      clock = new Date(Date.parse('2026-03-29T16:00:00Z') - Math.floor(lead / 2));
      expect((await pass()).destroys).to.equal(0);
      clock = new Date('2026-03-29T16:00:01Z'); // 18:00:01 CEST: the pool shrinks
      const shrink = await pass();
      expect(shrink.destroys).to.equal(1);
      expect((await pool('office')).counts.ready).to.equal(0);
    } finally {
      clock = null;
    }
  });

  it('refuses bad input with a 4xx problem and changes nothing', async () => {
    const bad: Array<[string, string, unknown, number]> = [
      ['POST', '/v1/pools', { name: 'Bad Name', minReady: 1, standby: 'running' }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: -1, standby: 'running' }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: 1, standby: 'warm' }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: 5, standby: 'running', maxSize: 2 }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: 1, standby: 'running', schedules: [{ cron: '61 * * * *', timezone: 'UTC', minReady: 1 }] }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: 1, standby: 'running', schedules: [{ cron: '0 8 * * *', timezone: 'Mars/Olympus', minReady: 1 }] }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: 1, standby: 'running', spec: { labels: { 'managed-by': 'me' } } }, 400],
      ['POST', '/v1/pools', { name: 'p1', minReady: 1, standby: 'running', extra: true }, 400],
      ['POST', '/v1/pools', { name: 'race', minReady: 1, standby: 'running' }, 409],
      ['PATCH', '/v1/pools/race', {}, 400],
      ['PATCH', '/v1/pools/race', { maxSize: 1, minReady: 2 }, 400],
      ['PATCH', '/v1/pools/nope', { minReady: 1 }, 404],
      ['GET', '/v1/pools/NOPE!', undefined, 400],
      ['POST', '/v1/pools/nope/claim', {}, 404],
      ['POST', '/v1/pools/race/claim', { leaseSeconds: 0 }, 400],
      ['POST', '/v1/pools/race/claim', { labels: { 'tailfleet-agent': 'x' } }, 400],
      ['POST', '/v1/pools/race/claim?wait=600', {}, 400],
      ['POST', '/v1/pools/race/claim', { name: 'ci-runner-1' }, 409],
      ['DELETE', '/v1/pools/nope', undefined, 404],
    ];
    // The race pool needs a standby for the name clash to be tried on one.
    await api.call('PATCH', '/v1/pools/race', { minReady: 1 });
    await stocked('race', 1);
    const racePool = await pool('race');
    const agentsBefore = (await api.get('/v1/agents?limit=100')).body.items.length;
    const poolsBefore = (await api.get('/v1/pools')).body;
    for (const [method, path, body, status] of bad) {
      const res = await api.call(method, path, body);
      expect(res.status, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`).to.equal(status);
      expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    }
    expect(await pool('race')).to.deep.equal(racePool);
    expect((await api.get('/v1/agents?limit=100')).body.items.length).to.equal(agentsBefore);
    expect((await api.get('/v1/pools')).body.items.map((p: { name: string }) => p.name)).to.deep.equal(poolsBefore.items.map((p: { name: string }) => p.name));
  });

  it('spends at most 10 % of the request budget an hour on refills', async () => {
    const now = new Date();
    const { spent } = await tf.poolPolicy!.budget(now);
    // A budget that leaves room for two more provisions this hour.
    const limit = (spent + 10) * 10;
    suite.sim.control.setTimings({ rateLimit: { limit } });
    await waitFor('the client to see the new limit', async () => {
      await tf.hetzner.getServer(1);
      return tf.hetzner.rateLimiter.state().limit === limit;
    });
    try {
      await api.post('/v1/pools', { name: 'budget', minReady: 5, standby: 'running' });
      const result = await pass();
      expect(result.refills).to.equal(2);
      expect(result.deferred).to.equal(3);
      expect((await tf.poolPolicy!.budget(new Date())).spent).to.be.at.most(limit * 0.1);
    } finally {
      suite.sim.control.setTimings({ rateLimit: { limit: 3600 } });
    }
  });
});
