import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';
import { operationEnded } from '../helpers/launched';

// The fleet that runs itself, over real HTTP against the simulator: each agent's own credential
// (delivered in its user data), its reports, leases, the idle ladder and expiry. The policy loop's
// clock is the only thing moved: `skew` stands for time passing, so a threshold of minutes is
// crossed at once; every action is then a real operation through the queue and the workflows.

/** Standard Webhooks, written out here rather than imported from src/. */
function verify(secret: string, headers: IncomingHttpHeaders, body: string): boolean {
  const [id, timestamp, signatures] = [headers['webhook-id'], headers['webhook-timestamp'], headers['webhook-signature']];
  if (typeof id !== 'string' || typeof timestamp !== 'string' || typeof signatures !== 'string') return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = Buffer.from(createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64'));
  return signatures.split(' ').some((s) => {
    const given = Buffer.from(s.split(',')[1] ?? '');
    return s.startsWith('v1,') && given.length === expected.length && timingSafeEqual(given, expected);
  });
}

describe('policy: activity, leases, the idle ladder and expiry', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let skewMs = 0;
  let receiver: Server;
  let receiverUrl = '';
  const received: Array<{ valid: boolean; body: { type: string; data: any } }> = [];
  let secret = '';

  before(async () => {
    suite = await createSuite('policy');
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        received.push({ valid: verify(secret, req.headers, body), body: JSON.parse(body) });
        res.statusCode = 204;
        res.end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    tf = await suite.launch({
      env: {
        // The reporter reaches this API (its port is not known yet: any URL does, the tests post themselves).
        TAILFLEET_PUBLIC_URL: 'http://127.0.0.1:9/',
        POLICY_INTERVAL_SECONDS: '3600',
        EXPIRY_WARNING_SECONDS: '600',
        MAX_AGENT_LIFETIME_HOURS: '24',
        WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
        RELAY_INTERVAL_MS: '100',
        RECONCILE_INTERVAL_SECONDS: '0',
      },
      overrides: { policyClock: () => new Date(Date.now() + skewMs) },
    });
    api = apiClient(tf.url!, suite.apiToken);
    const hook = await api.post('/v1/webhooks', { url: receiverUrl, events: ['agent.expiring', 'operation.succeeded'] });
    expect(hook.status).to.equal(201);
    secret = hook.body.secret;
  });

  after(async () => {
    await suite?.close();
    await new Promise<void>((resolve) => receiver?.close(() => resolve()));
  });

  beforeEach(() => {
    skewMs = 0;
  });

  /** One pass of the policy loop now (the loop's own timer is an hour: the tests decide when). */
  const pass = () => tf.policyLoop!.runOnce();

  async function provisioned(name: string, extra: Record<string, unknown> = {}): Promise<string> {
    const created = await api.post('/v1/agents', { name, ...extra });
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    const op = await operationEnded(api, created.body.operation.id);
    expect(op.operation.status, op.operation.error).to.equal('succeeded');
    return created.body.agent.id;
  }

  /** The agent's own credential, as its machine got it: from the user data the server was created with. */
  function credentialOf(agentId: string): { token: string; url: string } {
    const server = suite.sim.control.state().servers.find((s) => s.labels['tailfleet-agent'] === agentId)!;
    const userData = server._sim.userData!;
    const token = /^TAILFLEET_AGENT_TOKEN='([^']+)'$/m.exec(userData)?.[1];
    const url = /^TAILFLEET_URL='([^']+)'$/m.exec(userData)?.[1];
    const id = /^TAILFLEET_AGENT_ID='([^']+)'$/m.exec(userData)?.[1];
    expect(id).to.equal(agentId);
    return { token: token!, url: url! };
  }

  async function policyOps(agentId: string): Promise<any[]> {
    const list = await api.get(`/v1/operations?agentId=${agentId}`);
    return list.body.items.filter((o: any) => o.requestedBy === 'system' && o.reason !== null).reverse();
  }

  it("gives each agent its own credential: it reports for its agent, another agent's is refused, and it is revoked at destroy", async () => {
    const a = await provisioned('reporter-a');
    const b = await provisioned('reporter-b');
    const credA = credentialOf(a);
    const credB = credentialOf(b);
    expect(credA.url).to.equal('http://127.0.0.1:9');
    expect(credA.token).to.not.equal(credB.token);
    const asA = apiClient(tf.url!, credA.token);

    const own = await asA.post(`/v1/agents/${a}/heartbeat`, { busy: true, sessions: 0, load: 0.5 });
    expect(own.status, JSON.stringify(own.body)).to.equal(200);
    expect(own.body.lastActivity.kind).to.equal('heartbeat-busy');

    const other = await asA.post(`/v1/agents/${b}/heartbeat`, { sessions: 1 });
    expect(other.status).to.equal(403);
    expect(other.body.type).to.equal('urn:tailfleet:problem:forbidden');
    expect((await api.get(`/v1/agents/${b}`)).body.agent.heartbeat).to.equal(null);
    // Nothing but its agent's activity: not even a read.
    expect((await asA.get(`/v1/agents/${a}`)).status).to.equal(403);
    expect((await asA.post(`/v1/agents/${a}/stop`)).status).to.equal(403);
    // Not listed with the operators' tokens, and not a way into the console.
    expect(JSON.stringify((await api.get('/v1/tokens')).body)).to.not.include(a);

    const view = (await api.get(`/v1/agents/${a}`)).body.agent;
    expect(view.heartbeat).to.include({ busy: true, sessions: 0, load: 0.5 });
    expect(view.spec.reporter).to.equal(true);
    expect(view.ready).to.equal(false); // joined, but its own cloud-init has not said it finished

    const destroyed = await api.post(`/v1/agents/${a}/destroy`);
    await operationEnded(api, destroyed.body.operation.id);
    expect((await asA.post(`/v1/agents/${a}/heartbeat`, { sessions: 0 })).status).to.equal(401);
  });

  it('is ready once the bootstrap reports done, and ?wait=ready answers then', async () => {
    const a = await provisioned('bootstrapped');
    const asA = apiClient(tf.url!, credentialOf(a).token);
    expect((await api.get(`/v1/agents/${a}?wait=ready&timeout=0`)).body.agent.ready).to.equal(false);
    const waiting = api.get(`/v1/agents/${a}?wait=ready&timeout=30`);
    const reported = await asA.post(`/v1/agents/${a}/bootstrap`, { status: 'done' });
    expect(reported.status).to.equal(200);
    expect(reported.body.ready).to.equal(true);
    const answer = await waiting;
    expect(answer.body.agent.ready).to.equal(true);
    expect(answer.body.agent.bootstrap.status).to.equal('done');
    expect((await asA.post(`/v1/agents/${a}/bootstrap`, { status: 'maybe' })).status).to.equal(400);
  });

  it('never stops an agent under a lease past its idle threshold; once the lease is released it is stopped, with its reason', async () => {
    const a = await provisioned('leased', { idle: [{ afterSeconds: 60, action: 'stop' }] });
    const lease = await api.post(`/v1/agents/${a}/leases`, { holder: 'ci-job-17', ttlSeconds: 3600 });
    expect(lease.status).to.equal(201);
    expect(lease.body.live).to.equal(true);

    skewMs = 10 * 60_000; // ten minutes on, well past the 1-minute threshold, the lease still live
    const held = await pass();
    expect(held.requested.filter((r) => r.agentId === a)).to.deep.equal([]);
    expect((await api.get(`/v1/agents/${a}`)).body.agent.lastActivity.kind).to.equal('lease');

    const renewed = await api.post(`/v1/agents/${a}/leases/${lease.body.id}/renew`, { ttlSeconds: 7200 });
    expect(renewed.status).to.equal(200);
    expect(new Date(renewed.body.expiresAt).getTime()).to.be.greaterThan(new Date(lease.body.expiresAt).getTime());
    const released = await api.call('DELETE', `/v1/agents/${a}/leases/${lease.body.id}`);
    expect(released.status).to.equal(200);
    expect(released.body.live).to.equal(false);
    expect((await api.post(`/v1/agents/${a}/leases/${lease.body.id}/renew`, { ttlSeconds: 60 })).status).to.equal(409);

    skewMs = 30_000; // 30 s after the release: not yet idle for a minute
    expect((await pass()).requested.filter((r) => r.agentId === a)).to.deep.equal([]);
    skewMs = 61_000;
    const acted = (await pass()).requested.filter((r) => r.agentId === a);
    expect(acted.map((r) => r.action)).to.deep.equal(['stop']);
    const op = await operationEnded(api, acted[0]!.operationId);
    expect(op.operation).to.include({ type: 'stop', status: 'succeeded', requestedBy: 'system' });
    expect(op.operation.reason).to.match(/^idle 1 min since \S+ \(last activity: lease\)$/);
    expect((await api.get(`/v1/agents/${a}`)).body.agent.status).to.equal('paused');
    const events = (await api.get(`/v1/agents/${a}/events`)).body.items;
    expect(events.some((e: any) => e.entityType === 'operation' && e.reason.startsWith('stop requested: idle 1 min since'))).to.equal(true);
  });

  it('walks the idle ladder in order: stop, then hibernate, then destroy, each once', async () => {
    const a = await provisioned('ladder', {
      idle: [
        { afterSeconds: 60, action: 'stop' },
        { afterSeconds: 120, action: 'hibernate' },
        { afterSeconds: 180, action: 'destroy' },
      ],
    });
    const step = async (skew: number) => {
      skewMs = skew;
      const acted = (await pass()).requested.filter((r) => r.agentId === a);
      for (const r of acted) expect((await operationEnded(api, r.operationId)).operation.status).to.equal('succeeded');
      // A second pass at the same moment has nothing left to do.
      expect((await pass()).requested.filter((r) => r.agentId === a)).to.deep.equal([]);
      return acted.map((r) => r.action);
    };
    expect(await step(30_000)).to.deep.equal([]);
    expect(await step(70_000)).to.deep.equal(['stop']);
    expect(await step(130_000)).to.deep.equal(['hibernate']);
    expect(await step(190_000)).to.deep.equal(['destroy']);
    expect((await policyOps(a)).map((o) => [o.type, o.reason.split(' since ')[0]])).to.deep.equal([
      ['stop', 'idle 1 min'],
      ['hibernate', 'idle 2 min'],
      ['destroy', 'idle 3 min'],
    ]);
    expect((await api.get(`/v1/agents/${a}`)).body.agent.status).to.equal('destroyed');
    // The cost view counts what the policies did this month.
    const cost = (await api.get('/v1/fleet/cost')).body;
    expect(cost.policies.month).to.equal(new Date().toISOString().slice(0, 7));
    expect(cost.policies.actions.hibernate).to.be.at.least(1);
    expect(cost.policies.actions.destroy).to.be.at.least(1);
    expect(cost.policies.saved).to.be.at.least(0);
  });

  it('refuses a ladder out of order, and a heartbeat with a session counts as activity', async () => {
    const bad = await api.post('/v1/agents', { name: 'bad-ladder', idle: [{ afterSeconds: 600, action: 'hibernate' }, { afterSeconds: 60, action: 'stop' }] });
    expect(bad.status).to.equal(400);
    expect(bad.body.errors.map((e: any) => e.path)).to.include.members(['body.idle.1.afterSeconds', 'body.idle.1.action']);

    const a = await provisioned('in-session', { idle: [{ afterSeconds: 60, action: 'stop' }] });
    skewMs = 50_000;
    // A session 50 s in: the minute counts from it.
    const hb = await apiClient(tf.url!, credentialOf(a).token).post(`/v1/agents/${a}/heartbeat`, { sessions: 1, load: 0.1 });
    expect(hb.body.lastActivity.kind).to.equal('session');
    skewMs = 100_000; // 100 s after the start, but 50 s after the session (its time is the API's, not skewed)
    expect((await pass()).requested.filter((r) => r.agentId === a).map((r) => r.action)).to.deep.equal(['stop']);
  });

  it('warns once per expiry with a signed agent.expiring webhook, again after an extend, and destroys at expiry with reason "expired"', async () => {
    const a = await provisioned('expiring', { ttlSeconds: 3600 });
    const expiresAt = (await api.get(`/v1/agents/${a}`)).body.agent.expiresAt;
    expect(new Date(expiresAt).getTime() - Date.now()).to.be.within(3590_000, 3600_000);

    skewMs = 2900_000; // 11⅔ min before the expiry: no warning yet
    expect((await pass()).warned).to.equal(0);
    skewMs = 3100_000; // within EXPIRY_WARNING_SECONDS of it
    expect((await pass()).warned).to.equal(1);
    expect((await pass()).warned).to.equal(0);
    const warning = await waitFor('the agent.expiring delivery', () => received.find((r) => r.body.type === 'agent.expiring' && r.body.data.agent.id === a));
    expect(warning.valid).to.equal(true);
    expect(new Date(warning.body.data.agent.expiresAt).toISOString()).to.equal(new Date(expiresAt).toISOString());

    const extended = await api.post(`/v1/agents/${a}/extend`, { ttlSeconds: 7200 });
    expect(extended.status).to.equal(200);
    const newExpiry = new Date(extended.body.expiresAt).getTime();
    expect(newExpiry - Date.now()).to.be.within(7190_000, 7200_000);
    expect((await pass()).warned).to.equal(0); // the new expiry is two hours off
    const events = (await api.get(`/v1/agents/${a}/events`)).body.items.map((e: any) => e.toStatus);
    expect(events).to.include.members(['expiring', 'extended']);

    skewMs = 6700_000;
    expect((await pass()).warned).to.equal(1);
    skewMs = 7300_000;
    const acted = (await pass()).requested.filter((r) => r.agentId === a);
    expect(acted.map((r) => r.action)).to.deep.equal(['destroy']);
    expect(acted[0]!.reason).to.match(/^expired at /);
    expect((await operationEnded(api, acted[0]!.operationId)).operation.status).to.equal('succeeded');
    const done = await waitFor('the destroy webhook with its reason', () =>
      received.find((r) => r.body.type === 'operation.succeeded' && r.body.data.operation.id === acted[0]!.operationId),
    );
    expect(done.valid).to.equal(true);
    expect(done.body.data.operation.requestReason).to.match(/^expired at /);
    expect(received.filter((r) => r.body.type === 'agent.expiring' && r.body.data.agent.id === a)).to.have.length(2);
  });

  it('holds an expired agent while a lease is live', async () => {
    const a = await provisioned('expired-leased', { ttlSeconds: 120 });
    const lease = await api.post(`/v1/agents/${a}/leases`, { holder: 'nightly', ttlSeconds: 600 });
    skewMs = 300_000;
    expect((await pass()).requested.filter((r) => r.agentId === a)).to.deep.equal([]);
    skewMs = 601_000;
    expect((await pass()).requested.filter((r) => r.agentId === a).map((r) => r.action)).to.deep.equal(['destroy']);
    expect(lease.status).to.equal(201);
  });

  it('leaves an agent alone for a while after its policy request failed, longer after each failure', async () => {
    const a = await provisioned('undeletable', { ttlSeconds: 120 });
    const destroysAt = async (skew: number) => {
      skewMs = skew;
      return (await pass()).requested.filter((r) => r.agentId === a);
    };
    /** Runs the requested destroy to its failure, then dates the failure at the loop's clock. */
    const failed = async (requested: Array<{ operationId: string }>) => {
      expect(requested).to.have.length(1);
      const ended = await operationEnded(api, requested[0]!.operationId);
      expect(ended.operation.status).to.equal('failed');
      await suite.db.dataSource.query(`UPDATE operations SET finished_at = now() + make_interval(secs => $2) WHERE id = $1`, [
        requested[0]!.operationId,
        skewMs / 1000,
      ]);
    };
    // The project refuses every server delete: each expiry destroy fails for good.
    suite.sim.control.setFaults([{ method: 'DELETE', route: '/hetzner/v1/servers/{id}', status: 403, code: 'forbidden', message: 'not allowed' }]);
    try {
      await failed(await destroysAt(200_000));
      expect(await destroysAt(230_000), 'asked again within a minute').to.deep.equal([]);
      await failed(await destroysAt(262_000));
      expect(await destroysAt(362_000), 'asked again within two minutes of the second failure').to.deep.equal([]);
      await failed(await destroysAt(387_000));
      expect(await destroysAt(507_000), 'asked again within four minutes of the third failure').to.deep.equal([]);
    } finally {
      suite.sim.control.clearFaults();
    }
    // Once the cloud lets it, the request after the backoff destroys the agent.
    const done = await destroysAt(628_000);
    expect(done.map((r) => r.action)).to.deep.equal(['destroy']);
    expect((await operationEnded(api, done[0]!.operationId)).operation.status).to.equal('succeeded');
    const failures = (await policyOps(a)).filter((o) => o.status === 'failed');
    expect(failures).to.have.length(3);
  });

  it('caps every agent at MAX_AGENT_LIFETIME_HOURS: the default expiry, and a longer one refused (create and extend)', async () => {
    const tooLong = await api.post('/v1/agents', { name: 'forever', ttlSeconds: 25 * 3600 });
    expect(tooLong.status).to.equal(422);
    expect(tooLong.body.type).to.equal('urn:tailfleet:problem:lifetime-exceeded');
    expect(await suite.db.dataSource.query(`SELECT 1 FROM agents WHERE name = 'forever'`)).to.have.length(0);

    const a = await provisioned('capped');
    const agent = (await api.get(`/v1/agents/${a}`)).body.agent;
    // From its creation (the request's clock and the row's default agree within a moment).
    expect(new Date(agent.expiresAt).getTime() - new Date(agent.createdAt).getTime()).to.be.within(24 * 3600_000 - 1000, 24 * 3600_000);
    const extend = await api.post(`/v1/agents/${a}/extend`, { ttlSeconds: 30 * 3600 });
    expect(extend.status).to.equal(422);
    expect((await api.post(`/v1/agents/${a}/extend`, { ttlSeconds: 60, expiresAt: new Date(Date.now() + 3600_000).toISOString() })).status).to.equal(400);
    expect((await api.get(`/v1/agents/${a}`)).body.agent.expiresAt).to.equal(agent.expiresAt);
  });
});

