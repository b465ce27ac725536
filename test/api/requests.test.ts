import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { transition } from '../../src/db/transitions';
import { Agent, Event, Operation } from '../../src/entities';
import { markRunning, startApiHarness, type ApiHarness, type ApiResponse } from './harness';

// Requests that mean what they say: an Idempotency-Key names one token's one request for a day, an
// agent's user data is an admin's to read, bad text and hostile shapes are 400s, the audit never
// mistakes a token for tailfleet, all over real HTTP against real PostgreSQL and Redis.

function expectProblem(res: ApiResponse, status: number, kind: string) {
  expect(res.status, res.text).to.equal(status);
  expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
  expect(res.body).to.include({ type: `urn:tailfleet:problem:${kind}`, status });
}

const SCRIPT = '#!/bin/sh\necho "db password: hunter2"\n';

describe('API: requests that mean what they say', () => {
  let h: ApiHarness;
  const tokens: Record<'read' | 'operate' | 'admin', { token: string; id: string }> = {} as never;

  before(async () => {
    h = await startApiHarness('requests');
    for (const scope of ['read', 'operate', 'admin'] as const) {
      const res = await h.api.request('POST', '/v1/tokens', { body: { name: `req-${scope}`, scope } });
      expect(res.status, res.text).to.equal(201);
      tokens[scope] = { token: res.body.token, id: res.body.id };
    }
  });

  after(async () => {
    await h?.close();
  });

  async function runningAgent(name: string): Promise<string> {
    const res = await h.api.request('POST', '/v1/agents', { body: { name } });
    expect(res.status, res.text).to.equal(201);
    await markRunning(h.ds, res.body.agent.id);
    return res.body.agent.id as string;
  }

  const stop = (agentId: string, key: string, token?: string) =>
    h.api.request('POST', `/v1/agents/${agentId}/stop`, { token, headers: { 'idempotency-key': key } });

  /** The operation ends, as a worker would end it, so the agent takes the same command again. */
  async function finish(operationId: string): Promise<void> {
    await transition(h.ds, { entity: 'operation', id: operationId, from: ['queued'], to: 'running', reason: 'test' });
    await transition(h.ds, { entity: 'operation', id: operationId, from: ['running'], to: 'succeeded', reason: 'test' });
  }

  /** The clock moves for one operation: it was requested `hours` earlier than it was. */
  async function age(operationId: string, hours: number): Promise<void> {
    await h.ds.query(`UPDATE operations SET requested_at = requested_at - make_interval(secs => $2::float8 * 3600) WHERE id = $1`, [operationId, hours]);
  }

  describe('Idempotency-Key', () => {
    it('belongs to the token that sent it: the same key from another token is another request', async () => {
      const agentId = await runningAgent('idem-owner');
      const other = await runningAgent('idem-owner-2');
      const first = await stop(agentId, 'deploy-42', tokens.operate.token);
      expect(first.status, first.text).to.equal(202);

      // The admin's stop with the operate token's key is not answered with the operate token's stop.
      const admin = await stop(agentId, 'deploy-42');
      expectProblem(admin, 409, 'state-conflict');
      expect(admin.body.detail).to.include(first.body.operation.id);
      // On another agent it is simply a new stop, not a reuse of someone else's key.
      const elsewhere = await stop(other, 'deploy-42', tokens.admin.token);
      expect(elsewhere.status, elsewhere.text).to.equal(202);
      expect(elsewhere.body.operation.idempotencyKey).to.equal('deploy-42');

      // The owner still gets its own answer.
      const again = await stop(agentId, 'deploy-42', tokens.operate.token);
      expect(again.status).to.equal(200);
      expect(again.body.operation.id).to.equal(first.body.operation.id);
      expect(await h.ds.getRepository(Operation).countBy({ agentId, type: 'stop' })).to.equal(1);
    });

    it('names one route and target: the same token reusing it elsewhere gets a 422, create and reprovision included', async () => {
      const agentId = await runningAgent('idem-route');
      expect((await stop(agentId, 'route-1', tokens.operate.token)).status).to.equal(202);
      const start = await h.api.request('POST', `/v1/agents/${agentId}/start`, {
        token: tokens.operate.token,
        headers: { 'idempotency-key': 'route-1' },
      });
      expectProblem(start, 422, 'idempotency-key-reused');

      // Both provision an agent, but a reprovision is not the create that used the key.
      const created = await h.api.request('POST', '/v1/agents', { body: { name: 'idem-create' }, headers: { 'idempotency-key': 'made-1' } });
      expect(created.status, created.text).to.equal(201);
      const reprovision = await h.api.request('POST', `/v1/agents/${created.body.agent.id}/reprovision`, { headers: { 'idempotency-key': 'made-1' } });
      expectProblem(reprovision, 422, 'idempotency-key-reused');
      expect(reprovision.body.detail).to.include('POST /v1/agents/:id/reprovision');
      expect(await h.ds.getRepository(Operation).countBy({ agentId: created.body.agent.id })).to.equal(1);
    });

    it('is kept 24 hours: a replay until then, a new request after', async () => {
      const agentId = await runningAgent('idem-expiry');
      const first = await stop(agentId, 'nightly-stop', tokens.operate.token);
      expect(first.status).to.equal(202);
      await finish(first.body.operation.id);

      await age(first.body.operation.id, 23.9);
      const replay = await stop(agentId, 'nightly-stop', tokens.operate.token);
      expect(replay.status).to.equal(200);
      expect(replay.body.operation.id).to.equal(first.body.operation.id);

      await age(first.body.operation.id, 0.2);
      const fresh = await stop(agentId, 'nightly-stop', tokens.operate.token);
      expect(fresh.status, fresh.text).to.equal(202);
      expect(fresh.body.operation.id).not.to.equal(first.body.operation.id);
      expect(fresh.body.operation.idempotencyKey).to.equal('nightly-stop');
      // The old operation gave the key up; it answers for nothing any more.
      const old = await h.api.request('GET', `/v1/operations/${first.body.operation.id}`);
      expect(old.body.operation.idempotencyKey).to.equal(null);
      const again = await stop(agentId, 'nightly-stop', tokens.operate.token);
      expect(again.status).to.equal(200);
      expect(again.body.operation.id).to.equal(fresh.body.operation.id);
    });
  });

  describe('userData', () => {
    let agentId: string;
    const size = Buffer.byteLength(SCRIPT);
    const sha256 = createHash('sha256').update(SCRIPT).digest('hex');

    before(async () => {
      const created = await h.api.request('POST', '/v1/agents', { token: tokens.admin.token, body: { name: 'secret-box', userData: SCRIPT } });
      expect(created.status, created.text).to.equal(201);
      expect(created.body.agent.spec).to.include({ userData: SCRIPT, userDataSize: size, userDataSha256: sha256 });
      agentId = created.body.agent.id;
    });

    for (const scope of ['read', 'operate'] as const) {
      it(`is shown to a ${scope} token as its size and SHA-256 only`, async () => {
        const one = await h.api.request('GET', `/v1/agents/${agentId}`, { token: tokens[scope].token });
        expect(one.status).to.equal(200);
        expect(one.body.agent.spec).to.include({ userData: null, userDataSize: size, userDataSha256: sha256 });
        const list = await h.api.request('GET', '/v1/agents?name=secret-box', { token: tokens[scope].token });
        expect(list.body.items[0].spec).to.include({ userData: null, userDataSize: size, userDataSha256: sha256 });
        expect(one.text + list.text).not.to.include('hunter2');
      });
    }

    it('is shown as text to an admin token, and as nulls when there is none', async () => {
      const one = await h.api.request('GET', `/v1/agents/${agentId}`, { token: tokens.admin.token });
      expect(one.body.agent.spec.userData).to.equal(SCRIPT);
      const plain = await h.api.request('POST', '/v1/agents', { token: tokens.operate.token, body: { name: 'plain-box' } });
      expect(plain.body.agent.spec).to.include({ userData: null, userDataSize: null, userDataSha256: null });
    });

    it('is not echoed to the operate token that sent it', async () => {
      const created = await h.api.request('POST', '/v1/agents', { token: tokens.operate.token, body: { name: 'sent-box', userData: SCRIPT } });
      expect(created.status).to.equal(201);
      expect(created.body.agent.spec).to.include({ userData: null, userDataSha256: sha256 });
    });
  });

  describe('bad input', () => {
    async function counts() {
      const [agents, operations, events] = await Promise.all([
        h.ds.getRepository(Agent).count(),
        h.ds.getRepository(Operation).count(),
        h.ds.getRepository(Event).count(),
      ]);
      return { agents, operations, events };
    }

    const create = (raw: string) => h.api.request('POST', '/v1/agents', { raw, headers: { 'content-type': 'application/json' } });
    const pathsOf = (res: ApiResponse) => (res.body.errors as Array<{ path: string }>).map((e) => e.path);

    it('refuses NUL characters and unpaired surrogates in a query or a body, naming the field', async () => {
      const before = await counts();
      const name = await h.api.request('GET', '/v1/agents?name=a%00b');
      expectProblem(name, 400, 'validation-error');
      expect(pathsOf(name)).to.deep.equal(['query.name']);

      const nul = await create(JSON.stringify({ name: 'nul-box', userData: '#!/bin/sh\necho \u0000' }));
      expectProblem(nul, 400, 'validation-error');
      expect(nul.body.errors).to.deep.include({ path: 'body.userData', message: 'must not contain NUL characters' });

      for (const raw of ['{"name":"lone-box","userData":"#!/bin/sh\\necho \\ud800"}', '{"name":"lone-box","labels":{"a":"\\udfff"}}']) {
        const lone = await create(raw);
        expectProblem(lone, 400, 'validation-error');
        expect(lone.body.errors[0].message).to.match(/unpaired surrogate/);
      }
      const token = await h.api.request('POST', '/v1/tokens', { raw: '{"name":"ok","scope":"read\\u0000"}', headers: { 'content-type': 'application/json' } });
      expect(pathsOf(token)).to.deep.equal(['body.scope']);
      expect(await counts()).to.deep.equal(before);
    });

    it('refuses __proto__, constructor and prototype keys at any depth, and nesting deeper than 32 levels', async () => {
      const before = await counts();
      for (const [raw, path] of [
        ['{"name":"proto-box","labels":{"__proto__":"x"}}', 'body.labels.__proto__'],
        ['{"name":"ctor-box","labels":{"constructor":"x"}}', 'body.labels.constructor'],
        ['{"name":"proto-box","__proto__":{"isAdmin":true}}', 'body.__proto__'],
        ['{"url":"https://93.184.215.14/","events":[{"prototype":1}]}', 'body.events.0.prototype'],
      ] as const) {
        const res = raw.includes('"url"')
          ? await h.api.request('POST', '/v1/webhooks', { raw, headers: { 'content-type': 'application/json' } })
          : await create(raw);
        expectProblem(res, 400, 'validation-error');
        expect(pathsOf(res), raw).to.include(path);
      }
      const deep = await create(`{"name":"deep-box","labels":${'{"a":'.repeat(40)}"x"${'}'.repeat(40)}}`);
      expectProblem(deep, 400, 'validation-error');
      expect(deep.body.errors[0].message).to.equal('nests deeper than 32 levels');
      expect(await counts()).to.deep.equal(before);
    });

    it('refuses a cursor or a limit beyond what the database can hold', async () => {
      const agentId = (await h.ds.getRepository(Agent).findOneByOrFail({ name: 'plain-box' })).id;
      for (const big of ['9999999999999999999', '9223372036854775808']) {
        const cursor = Buffer.from(big).toString('base64url');
        const events = await h.api.request('GET', `/v1/agents/${agentId}/events?cursor=${cursor}`);
        expectProblem(events, 400, 'validation-error');
        expect(pathsOf(events)).to.deep.equal(['query.cursor']);
      }
      const last = await h.api.request('GET', `/v1/agents/${agentId}/events?cursor=${Buffer.from('9223372036854775807').toString('base64url')}`);
      expect(last.status).to.equal(200);
      expect(last.body.items).to.deep.equal([]);
      for (const path of ['/v1/agents', '/v1/operations', `/v1/agents/${agentId}/events`]) {
        expectProblem(await h.api.request('GET', `${path}?limit=99999999999999999999`), 400, 'validation-error');
      }
    });
  });

  describe('token names and actors', () => {
    it('refuses the names tailfleet records itself under, in any case, with a 422', async () => {
      for (const name of ['system', 'System', 'SYSTEM', 'bootstrap', 'BootStrap']) {
        const res = await h.api.request('POST', '/v1/tokens', { body: { name, scope: 'read' } });
        expectProblem(res, 422, 'name-reserved');
        expect(res.body.errors).to.deep.equal([{ path: 'body.name', message: 'is reserved' }]);
      }
      const list = await h.api.request('GET', '/v1/tokens?includeRevoked=true');
      expect(list.body.items.map((t: { name: string }) => t.name.toLowerCase())).not.to.include.members(['system', 'bootstrap']);
    });

    it('records the token id with its name, so a name used again is another actor', async () => {
      const actors: string[] = [];
      for (const round of [1, 2]) {
        const issued = await h.api.request('POST', '/v1/tokens', { body: { name: 'ci-reused', scope: 'operate' } });
        expect(issued.status, issued.text).to.equal(201);
        const created = await h.api.request('POST', '/v1/agents', { token: issued.body.token, body: { name: `by-reused-${round}` } });
        expect(created.status).to.equal(201);
        expect(created.body.operation.requestedBy).to.equal(`token:ci-reused#${issued.body.id}`);
        const events = await h.api.request('GET', `/v1/agents/${created.body.agent.id}/events`);
        const seen = new Set(events.body.items.map((e: { actor: string }) => e.actor));
        expect([...seen]).to.deep.equal([`token:ci-reused#${issued.body.id}`]);
        actors.push(created.body.operation.requestedBy);
        expect((await h.api.request('DELETE', `/v1/tokens/${issued.body.id}`)).status).to.equal(204);
      }
      expect(actors[0]).not.to.equal(actors[1]);
      // API_TOKEN stays `bootstrap`: it has no row and its name is reserved.
      const mine = await h.api.request('POST', '/v1/agents', { body: { name: 'by-bootstrap' } });
      expect(mine.body.operation.requestedBy).to.equal('bootstrap');
    });
  });
});
