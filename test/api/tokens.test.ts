import { expect } from 'chai';
import type { Response } from 'express';
import { actorOf, hashToken } from '../../src/api/auth';
import { ApiToken, NAMED_TOKEN_SCOPES, type TokenScope } from '../../src/entities';
import { jsonOf } from '../../src/lib/json';
import type { Tailfleet } from '../../src/server';
import { contractOf, type ContractValidator } from '../helpers/contract';
import { createSuite, waitFor, type Suite } from '../pipeline/stack';

// Scoped tokens against a tailfleet built by the composition root (API role: no workers needed),
// over real HTTP, real PostgreSQL and real Redis.

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';
const BOARD = { user: 'operator', password: 'board-password-for-tokens' };

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

async function call(
  baseUrl: string,
  method: string,
  path: string,
  opts: { token?: string; authorization?: string; body?: unknown } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.authorization !== undefined) headers.authorization = opts.authorization;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(baseUrl + path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  // An event stream stays open: its status and headers are the answer.
  const streaming = res.headers.get('content-type')?.startsWith('text/event-stream') === true;
  const text = streaming ? (await res.body?.cancel(), '') : await res.text();
  const body = jsonOf(text);
  contracts[baseUrl] ??= contractOf(baseUrl);
  const wrong = (await contracts[baseUrl]).check(method, path, { status: res.status, contentType: res.headers.get('content-type'), body: text ? (body ?? text) : undefined });
  if (wrong.length > 0) throw new Error(`The answer breaks the OpenAPI document:\n${wrong.join('\n')}`);
  return { status: res.status, headers: res.headers, text, body };
}

// Every answer is checked against the document the app serves.
const contracts: Record<string, Promise<ContractValidator>> = {};

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

function expectProblem(res: Answer, status: number, kind: string) {
  expect(res.status, res.text).to.equal(status);
  expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
  expect(res.body).to.include({ type: `urn:tailfleet:problem:${kind}`, status });
  expect(res.body.title).to.be.a('string').with.length.greaterThan(0);
  expect(res.body.detail).to.be.a('string').with.length.greaterThan(0);
}

/**
 * The policy, written down independently of the code under test: tokens, webhooks, resolving a finding and Bull Board need admin,
 * every other read needs read, every other write needs operate; the OpenAPI document, the probes
 * and metrics need nothing.
 */
function expectedScope(method: string, path: string): TokenScope | 'public' {
  if (['/healthz', '/readyz', '/metrics', '/v1/openapi.json'].includes(path)) return 'public';
  // What an agent's machine reports, and leases (a job on the machine may hold one): its own credential or operate.
  if (method !== 'GET' && /^\/v1\/agents\/\{id\}\/(heartbeat|bootstrap|leases)/.test(path)) return 'agent';
  if (path === '/admin/queues' || path.startsWith('/v1/tokens') || path.startsWith('/v1/webhooks')) return 'admin';
  if (method === 'POST' && path.startsWith('/v1/findings/')) return 'admin';
  return method === 'GET' ? 'read' : 'operate';
}

const RANK: Record<TokenScope, number> = { agent: -1, read: 0, operate: 1, admin: 2 };

describe('API: scoped tokens', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let url: string;
  const tokens = {} as Record<TokenScope, string>;

  async function createToken(name: string, scope: TokenScope, extra: Record<string, unknown> = {}) {
    const res = await call(url, 'POST', '/v1/tokens', { token: suite.apiToken, body: { name, scope, ...extra } });
    expect(res.status, res.text).to.equal(201);
    return res.body as { id: string; name: string; scope: TokenScope; token: string; tokenPrefix: string; createdAt: string; expiresAt: string | null };
  }

  before(async () => {
    suite = await createSuite('tokens');
    tf = await suite.launch({ env: { ROLE: 'api', BULL_BOARD_USER: BOARD.user, BULL_BOARD_PASSWORD: BOARD.password } });
    url = tf.url!;
    for (const scope of NAMED_TOKEN_SCOPES) tokens[scope] = (await createToken(`table-${scope}`, scope)).token;
  });

  after(async () => {
    await suite?.close();
  });

  describe('lifecycle', () => {
    it('creates a token, shows its secret once, lists it without secrets, and revokes it for the next request', async () => {
      const created = await createToken('ci-deploy', 'operate');
      expect(created.token).to.match(/^tf_[A-Za-z0-9_-]{43}$/);
      expect(created).to.include({ name: 'ci-deploy', scope: 'operate', expiresAt: null });
      expect(created.token.startsWith(created.tokenPrefix)).to.equal(true);
      expect(created.createdAt).to.be.a('string');

      // Only the hash is stored.
      const row = await suite.db.dataSource.getRepository(ApiToken).findOneByOrFail({ id: created.id });
      expect(row.tokenHash).to.equal(hashToken(created.token));
      const dump = JSON.stringify(await suite.db.dataSource.query(`SELECT * FROM api_tokens`));
      expect(dump).not.to.include(created.token);

      const list = await call(url, 'GET', '/v1/tokens', { token: suite.apiToken });
      expect(list.status).to.equal(200);
      const listed = (list.body.items as Array<Record<string, unknown>>).find((t) => t.id === created.id);
      expect(listed).to.include({ name: 'ci-deploy', scope: 'operate', tokenPrefix: created.tokenPrefix, revokedAt: null });
      expect(list.text).not.to.include(created.token);
      expect(list.text).not.to.include(row.tokenHash);
      for (const item of list.body.items) expect(item).to.have.all.keys('id', 'name', 'scope', 'tokenPrefix', 'createdAt', 'expiresAt', 'revokedAt', 'lastUsedAt');

      // The token works, and its use is recorded.
      expect((await call(url, 'GET', '/v1/agents', { token: created.token })).status).to.equal(200);
      await waitFor('last use recorded', async () => {
        const r = await suite.db.dataSource.getRepository(ApiToken).findOneByOrFail({ id: created.id });
        return r.lastUsedAt !== null;
      });

      const revoke = await call(url, 'DELETE', `/v1/tokens/${created.id}`, { token: suite.apiToken });
      expect(revoke.status, revoke.text).to.equal(204);
      expect(revoke.text).to.equal('');
      // The very next request: no cache to wait out.
      const after = await call(url, 'GET', '/v1/agents', { token: created.token });
      expectProblem(after, 401, 'unauthorized');
      expect(after.headers.get('www-authenticate')).to.contain('invalid_token');

      // Revoking again is a no-op; the listing hides revoked tokens unless asked.
      expect((await call(url, 'DELETE', `/v1/tokens/${created.id}`, { token: suite.apiToken })).status).to.equal(204);
      const live = await call(url, 'GET', '/v1/tokens', { token: suite.apiToken });
      expect(live.body.items.map((t: { id: string }) => t.id)).not.to.include(created.id);
      const all = await call(url, 'GET', '/v1/tokens?includeRevoked=true', { token: suite.apiToken });
      const revoked = all.body.items.find((t: { id: string }) => t.id === created.id);
      expect(revoked.revokedAt).to.be.a('string');

      // A revoked token's name is free again.
      const again = await createToken('ci-deploy', 'read');
      expect(again.id).not.to.equal(created.id);
    });

    it('refuses a duplicate live name, the reserved name, and bad fields, listing every problem', async () => {
      await createToken('dup-name', 'read');
      const dup = await call(url, 'POST', '/v1/tokens', { token: suite.apiToken, body: { name: 'dup-name', scope: 'admin' } });
      expectProblem(dup, 409, 'name-taken');

      const reserved = await call(url, 'POST', '/v1/tokens', { token: suite.apiToken, body: { name: 'bootstrap', scope: 'read' } });
      expectProblem(reserved, 422, 'name-reserved');

      const bad = await call(url, 'POST', '/v1/tokens', {
        token: suite.apiToken,
        body: { name: 'has space', scope: 'root', expiresAt: '2001-01-01T00:00:00Z', extra: 1 },
      });
      expectProblem(bad, 400, 'validation-error');
      expect(bad.body.errors.map((e: { path: string }) => e.path).sort()).to.deep.equal(['body', 'body.expiresAt', 'body.name', 'body.scope']);

      const unknown = await call(url, 'DELETE', `/v1/tokens/${UNKNOWN_ID}`, { token: suite.apiToken });
      expectProblem(unknown, 404, 'not-found');
      expectProblem(await call(url, 'DELETE', '/v1/tokens/not-a-uuid', { token: suite.apiToken }), 400, 'validation-error');
    });

    it('refuses an expired token with 401', async () => {
      const created = await createToken('short-lived', 'read', { expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
      expect(Date.parse(created.expiresAt!)).to.be.greaterThan(Date.now());
      expect((await call(url, 'GET', '/v1/agents', { token: created.token })).status).to.equal(200);
      await suite.db.dataSource.query(`UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, [created.id]);
      expectProblem(await call(url, 'GET', '/v1/agents', { token: created.token }), 401, 'unauthorized');
    });

    it('refuses well-formed tokens it never issued, and never accepts a token as Basic credentials on /v1', async () => {
      const forged = `tf_${'A'.repeat(43)}`;
      expectProblem(await call(url, 'GET', '/v1/agents', { token: forged }), 401, 'unauthorized');
      expectProblem(await call(url, 'GET', '/v1/agents', { authorization: basic('x', tokens.admin) }), 401, 'unauthorized');
    });
  });

  describe('scopes over every documented route', () => {
    it('allows each scope exactly the routes its policy names and refuses the rest with a 403 problem', async () => {
      const doc = (await call(url, 'GET', '/v1/openapi.json')).body as {
        paths: Record<string, Record<string, { security?: Array<Record<string, string[]>> }>>;
      };
      const routes = Object.entries(doc.paths).flatMap(([path, item]) =>
        Object.entries(item).map(([method, op]) => ({ method: method.toUpperCase(), path, op })),
      );
      // Every route of the app is documented (test/api/api.test.ts checks both directions).
      expect(routes.length).to.be.greaterThanOrEqual(20);
      expect(routes.map((r) => `${r.method} ${r.path}`)).to.include.members(['POST /v1/reconcile', 'DELETE /v1/tokens/{id}', 'GET /v1/operations']);

      const table: string[] = [];
      const wrong: string[] = [];
      for (const { method, path, op } of routes) {
        const expected = expectedScope(method, path);
        // The document states the same policy.
        const declared = op.security?.length === 0 ? 'public' : (op.security?.find((s) => s.bearerAuth)?.bearerAuth[0] ?? 'read');
        if (declared !== expected) wrong.push(`${method} ${path}: documented ${declared}, policy ${expected}`);

        for (const scope of NAMED_TOKEN_SCOPES) {
          const res = await call(url, method, path.replace('{id}', UNKNOWN_ID), {
            token: tokens[scope],
            body: method === 'POST' ? {} : undefined,
          });
          // A route for an agent's own credential takes operator tokens from operate up.
          const refused = expected === 'agent' ? RANK[scope] < RANK.operate : expected !== 'public' && RANK[scope] < RANK[expected];
          table.push(`${scope.padEnd(7)} ${method.padEnd(6)} ${path} → ${res.status}`);
          if (res.status === 401) wrong.push(`${scope} ${method} ${path}: 401 (${res.text.slice(0, 120)})`);
          if (refused) {
            if (res.status !== 403) wrong.push(`${scope} ${method} ${path}: expected 403, got ${res.status}`);
            else {
              expectProblem(res, 403, 'forbidden');
              expect(res.body).to.include({ requiredScope: expected, tokenScope: scope });
              expect(res.headers.get('www-authenticate')).to.equal(`Bearer realm="tailfleet", error="insufficient_scope", scope="${expected}"`);
            }
          } else if (res.status === 403) {
            wrong.push(`${scope} ${method} ${path}: refused with 403`);
          }
          if (res.status >= 500) wrong.push(`${scope} ${method} ${path}: ${res.status}`);
        }
      }
      expect(wrong, table.join('\n')).to.deep.equal([]);
    });

    it('refuses before reading the body: a read token gets 403, not 400, for a malformed command', async () => {
      const res = await call(url, 'POST', '/v1/agents', { token: tokens.read, body: { name: 'NOT VALID' } });
      expectProblem(res, 403, 'forbidden');
      expect(await suite.db.dataSource.getRepository('agents').count()).to.equal(0);
    });
  });

  describe('Bull Board', () => {
    it('opens with its own login and with an admin token (Bearer or Basic password), not with a lower scope', async () => {
      const queuesApi = '/admin/queues/api/queues';
      expect((await call(url, 'GET', queuesApi, { authorization: basic(BOARD.user, BOARD.password) })).status).to.equal(200);
      expect((await call(url, 'GET', queuesApi, { token: tokens.admin })).status).to.equal(200);
      expect((await call(url, 'GET', queuesApi, { token: suite.apiToken })).status).to.equal(200);
      expect((await call(url, 'GET', queuesApi, { authorization: basic('anyone', tokens.admin) })).status).to.equal(200);
      const page = await call(url, 'GET', '/admin/queues', { authorization: basic('anyone', tokens.admin) });
      expect(page.status).to.equal(200);
      expect(page.headers.get('content-type')).to.match(/text\/html/);

      for (const scope of ['read', 'operate'] as const) {
        expectProblem(await call(url, 'GET', queuesApi, { token: tokens[scope] }), 403, 'forbidden');
        expectProblem(await call(url, 'GET', queuesApi, { authorization: basic(BOARD.user, tokens[scope]) }), 403, 'forbidden');
      }
      const wrong = await call(url, 'GET', queuesApi, { authorization: basic(BOARD.user, 'not-the-password') });
      expectProblem(wrong, 401, 'unauthorized');
      expect(wrong.headers.get('www-authenticate')).to.match(/^Basic realm="tailfleet"/);
      expectProblem(await call(url, 'GET', queuesApi), 401, 'unauthorized');
    });

    it('has no Basic login of its own without BULL_BOARD_USER and BULL_BOARD_PASSWORD; an admin token still opens it', async () => {
      const plain = await suite.launch({ env: { ROLE: 'api' } });
      expect(plain.config.http.board).to.equal(null);
      const queuesApi = '/admin/queues/api/queues';
      expectProblem(await call(plain.url!, 'GET', queuesApi, { authorization: basic(BOARD.user, BOARD.password) }), 401, 'unauthorized');
      // Not the old default either (admin / API_TOKEN would now work only because API_TOKEN is an admin token).
      expectProblem(await call(plain.url!, 'GET', queuesApi, { authorization: basic('admin', 'admin') }), 401, 'unauthorized');
      expect((await call(plain.url!, 'GET', queuesApi, { authorization: basic('admin', tokens.admin) })).status).to.equal(200);
      expect((await call(plain.url!, 'GET', queuesApi, { token: tokens.admin })).status).to.equal(200);
      expectProblem(await call(plain.url!, 'GET', queuesApi, { token: tokens.read }), 403, 'forbidden');
    });
  });

  describe('actorOf', () => {
    it('names the token that made the request by name and id, and refuses to guess for an unauthenticated one', () => {
      const res = (principal?: unknown) => ({ locals: principal ? { principal } : {} }) as unknown as Response;
      expect(actorOf(res({ name: 'ci-deploy', scope: 'operate', tokenId: UNKNOWN_ID }))).to.equal(`token:ci-deploy#${UNKNOWN_ID}`);
      expect(actorOf(res({ name: 'bootstrap', scope: 'admin', tokenId: null }))).to.equal('bootstrap');
      expect(() => actorOf(res())).to.throw(/not authenticated/);
    });
  });
});
