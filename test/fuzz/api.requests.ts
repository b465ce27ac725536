import { gzipSync } from 'node:zlib';
import { AGENT_COMMAND_TYPES } from '../../src/operations/types';
import type { Prng } from './prng';

/**
 * Generators of bad requests for the tailfleet API. Every request is built with at least one defect
 * that the API must refuse (or is a read), so none of them may change anything: the fuzz test
 * compares the database and the queues before and after.
 */

export interface FuzzRequest {
  category: string;
  method: string;
  path: string;
  /** Flat [name, value, name, value, ...] like `rawHeaders`, so a header can appear twice. */
  headers: string[];
  body?: Buffer;
  /** Send the body with chunked transfer encoding instead of Content-Length. */
  chunked?: boolean;
  /** A read (GET/HEAD/OPTIONS) that may legitimately succeed; every other request must get a 4xx. */
  readOnly: boolean;
}

/** Bytes sent as they are on a fresh socket: for requests no HTTP client library would produce. */
export interface RawRequest {
  category: 'raw-http';
  label: string;
  bytes: Buffer;
}

export interface FuzzContext {
  /** API_TOKEN: the bootstrap admin. */
  token: string;
  /** Named tokens of the lower scopes, for requests their scope must refuse. */
  readToken: string;
  operateToken: string;
  /** Ids and names of the live named tokens. */
  tokenIds: string[];
  tokenNames: string[];
  agentIds: string[];
  provisioningJobIds: string[];
  operationIds: string[];
  /** Ownership findings: open ones (a request must not resolve them) and one resolved already. */
  openFindingIds: string[];
  resolvedFindingIds: string[];
  /** A console session of the read token (Cookie header value) and the CSRF token its forms carry. */
  consoleCookie: string;
  consoleCsrf: string;
}

const ROUTES_WITH_ID = [
  { method: 'GET', template: '/v1/agents/:id' },
  { method: 'GET', template: '/v1/agents/:id/events' },
  { method: 'POST', template: '/v1/agents/:id/stop' },
  { method: 'POST', template: '/v1/agents/:id/start' },
  { method: 'POST', template: '/v1/agents/:id/destroy' },
  { method: 'POST', template: '/v1/agents/:id/hibernate' },
  { method: 'POST', template: '/v1/agents/:id/wake' },
  { method: 'POST', template: '/v1/provisioning-jobs/:id/rollback' },
  { method: 'GET', template: '/v1/operations/:id' },
  { method: 'POST', template: '/v1/operations/:id/cancel' },
  { method: 'POST', template: '/v1/agents/:id/reprovision' },
  { method: 'DELETE', template: '/v1/tokens/:id' },
  { method: 'GET', template: '/v1/webhooks/:id' },
  { method: 'DELETE', template: '/v1/webhooks/:id' },
  { method: 'GET', template: '/v1/webhooks/:id/deliveries' },
  { method: 'POST', template: '/v1/findings/:id/resolve' },
] as const;

const PROTECTED_ROUTES = [
  { method: 'GET', path: '/v1/agents' },
  { method: 'POST', path: '/v1/agents' },
  { method: 'GET', path: '/v1/operations' },
  { method: 'GET', path: '/v1/fleet/cost' },
  { method: 'GET', path: '/v1/tokens' },
  { method: 'POST', path: '/v1/tokens' },
  { method: 'GET', path: '/v1/webhooks' },
  { method: 'POST', path: '/v1/webhooks' },
  { method: 'GET', path: '/v1/findings' },
  { method: 'GET', path: '/v1/pools' },
  { method: 'POST', path: '/v1/pools' },
  ...ROUTES_WITH_ID.map((r) => ({ method: r.method, path: r.template })),
];

const SQL_INJECTIONS = [
  "1' OR '1'='1",
  "'; DROP TABLE agents; --",
  "1; DELETE FROM operations WHERE '1'='1",
  "' UNION SELECT id, name FROM agents --",
  '1) OR pg_sleep(5)--',
  "$$; TRUNCATE events; $$",
  '\\x27 OR 1=1',
];
const TRAVERSALS = ['..', '../..', '../../etc/passwd', '..%2F..%2Fetc%2Fpasswd', '%2e%2e', '%2e%2e%2f%2e%2e', '....//....//', '..\\..\\windows', '%252e%252e'];
const PROTO_WORDS = ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', '__defineGetter__', 'valueOf'];
const UNICODE = ['ü', 'агент', '代理', '𝔘𝔫𝔦', '\u202eevil', 'a\u200db', '🤖', '\uFEFF', 'ｆｕｌｌｗｉｄｔｈ', 'e\u0301'];
const NULS = ['%00', 'abc%00def', '%00%00', 'a%00.json'];
const ODD_PERCENT = ['%', '%zz', '%C0%AE', '%E0%A4%A', '%FF%FE', '%ED%A0%80', '%u0041'];
const ODD_METHODS = ['PUT', 'PATCH', 'DELETE', 'PROPFIND', 'SEARCH', 'LOCK', 'UNLOCK', 'PURGE', 'MKCOL', 'COPY', 'MOVE', 'REPORT', 'LINK', 'UNLINK', 'TRACE', 'NOTIFY', 'SUBSCRIBE', 'MERGE'];
const VALID_BODY_JSON = (name: string) => JSON.stringify({ name });

/** Percent-encodes what a request target may not carry raw, keeping already-encoded sequences as they are. */
function pathSegment(value: string): string {
  return Array.from(value)
    .map((ch) => (/^[A-Za-z0-9\-._~!$&'()*+,;=:@%]$/.test(ch) ? ch : encodeURIComponent(ch)))
    .join('');
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

export class RequestFactory {
  constructor(
    private readonly rng: Prng,
    private readonly ctx: FuzzContext,
  ) {}

  private auth(): string[] {
    return ['authorization', `Bearer ${this.ctx.token}`];
  }

  private validName(): string {
    return `fz-${this.rng.hex(8)}`;
  }

  private badId(): string {
    const r = this.rng;
    const uuid = r.uuid();
    return r.weighted<() => string>([
      [3, () => r.pick(SQL_INJECTIONS)],
      [3, () => r.pick(TRAVERSALS)],
      [2, () => r.pick(PROTO_WORDS)],
      [2, () => r.pick(UNICODE)],
      [2, () => r.pick(NULS)],
      [2, () => r.pick(ODD_PERCENT)],
      [1, () => uuid.slice(0, -1)],
      [1, () => `${uuid}0`],
      [1, () => `{${uuid}}`],
      [1, () => uuid.replace(/-/g, '')],
      [1, () => `urn:uuid:${uuid}`],
      [1, () => uuid.replace(/[a-f]/, 'g')],
      [1, () => `${uuid}%00`],
      [1, () => ` ${uuid}`],
      [3, () => uuid], // well-formed, unknown
      [2, () => uuid.toUpperCase()], // well-formed, unknown
      [1, () => '00000000-0000-0000-0000-000000000000'],
      [1, () => 'x'.repeat(r.int(300, 6000))],
      [1, () => String(r.int(-1e9, 1e9))],
      [1, () => r.string(r.int(1, 40), 'abcdefABCDEF0123456789-_.~!$&()*+,;=:@')],
    ])();
  }

  private badName(): unknown {
    const r = this.rng;
    return r.weighted<() => unknown>([
      [3, () => r.pick<unknown>([0, 1, -1, 1.5, 1e308, true, false, null, [], {}, ['a'], { $gt: '' }, { toString: 'x' }])],
      [1, () => ''],
      [1, () => ' '],
      [1, () => 'UPPER'],
      [1, () => 'a_b'],
      [1, () => 'a b'],
      [1, () => '-lead'],
      [1, () => 'trail-'],
      [1, () => 'a'.repeat(r.int(64, 5000))],
      [2, () => r.pick(SQL_INJECTIONS)],
      [1, () => r.pick(TRAVERSALS)],
      // 'constructor' and 'prototype' are valid DNS labels, so only the others are bad names.
      [1, () => r.pick(PROTO_WORDS.filter((w) => !/^[a-z]+$/.test(w)))],
      [2, () => r.pick(UNICODE)],
      [1, () => `a\u0000b`],
      [1, () => '<script>alert(1)</script>'],
      [1, () => '${jndi:ldap://x/a}'],
      [1, () => '\ud800'],
    ])();
  }

  /** A create-agent body that is invalid by construction. */
  private badCreateBody(): { body: Buffer; label: string } {
    const r = this.rng;
    const name = this.validName();
    return r.weighted<() => { body: Buffer; label: string }>([
      [4, () => ({ body: json({ name: this.badName() }), label: 'bad name' })],
      [2, () => ({ body: json({}), label: 'missing name' })],
      [1, () => ({ body: json({ location: 'fsn1' }), label: 'missing name' })],
      [2, () => ({ body: Buffer.from(`{"name":"${name}","__proto__":{"polluted":"yes","isAdmin":true}}`), label: '__proto__ key' })],
      [1, () => ({ body: Buffer.from(`{"__proto__":{"name":"${name}"}}`), label: '__proto__ holds the name' })],
      [2, () => ({ body: json({ name, constructor: { prototype: { polluted: 'yes' } } }), label: 'constructor key' })],
      [1, () => ({ body: json({ name, prototype: { polluted: 'yes' } }), label: 'prototype key' })],
      [2, () => ({ body: json({ name, [r.pick(['status', 'id', 'admin', 'serverId', 'images', 'role', 'user_data', 'ssh_keys'])]: r.pick(['active', 1, true, 'x']) }), label: 'extra field' })],
      [
        2,
        () => ({
          body: json({ name, location: r.pick(['FSN1', '', 'a'.repeat(40), 1, null, ['fsn1'], "fsn1'; --", '../fsn1', 'fsn1\u0000', { a: 1 }]) }),
          label: 'bad location',
        }),
      ],
      [
        2,
        () => ({
          body: json({ name, serverType: r.pick(['CX22', '', 'x'.repeat(33), 22, false, ['cx22'], 'cx22; rm -rf /', 'cx_22']) }),
          label: 'bad serverType',
        }),
      ],
      [2, () => ({ body: Buffer.from(r.pick(['[]', `[{"name":"${name}"}]`, '"name"', '123', 'null', 'true', '{}'])), label: 'not an object' })],
      [
        3,
        () => ({
          body: json({
            name,
            labels: r.pick<unknown>([
              { 'managed-by': 'me' },
              { 'tailfleet-agent': 'x' },
              { '-x': '1' },
              { a: 'white space' },
              { ['k'.repeat(64)]: 'v' },
              { a: 1 },
              { a: null },
              { '': 'x' },
              { 'hetzner.cloud/x': 'y' },
              { 'Bad_Prefix/x': 'y' },
              ['a=b'],
              'a=b',
              Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, 'v'])),
            ]),
          }),
          label: 'bad labels',
        }),
      ],
      [
        2,
        () => ({
          body: json({
            name,
            userData: r.pick<unknown>(['', 'echo no shebang', 42, ['#!/bin/sh'], `#!/bin/sh\n${'x'.repeat(33_000)}`, '#cloud-configx', { a: 1 }]),
          }),
          label: 'bad userData',
        }),
      ],
      [
        2,
        () => ({
          body: json({
            name,
            [r.pick(['sshKeys', 'image'])]: r.pick<unknown>(['', 'has space', ['a b'], [''], Array.from({ length: 21 }, (_, i) => `k${i}`), 7, [1], '../x', null]),
          }),
          label: 'bad sshKeys or image',
        }),
      ],
    ])();
  }

  /** Bodies no JSON parser accepts (never empty, never valid after BOM stripping). */
  private malformedJson(): { body: Buffer; label: string } {
    const r = this.rng;
    const name = this.validName();
    const depth = r.int(1000, 7000);
    return r.weighted<() => { body: Buffer; label: string }>([
      [2, () => ({ body: Buffer.from(r.pick(['{', '{"name":', `{"name":"${name}",}`, `{'name':'${name}'}`, `{name:"${name}"}`, '{"name" "x"}', '}{'])), label: 'syntax' })],
      [1, () => ({ body: Buffer.from(`{"name":"${name}"} trailing`), label: 'trailing garbage' })],
      [1, () => ({ body: Buffer.from(`{"name":"${name}"}{"name":"${name}"}`), label: 'two documents' })],
      [1, () => ({ body: Buffer.from(r.pick(['NaN', 'undefined', 'Infinity', '-', '+1', '0x10', "'x'"])), label: 'not JSON' })],
      [1, () => ({ body: Buffer.from(`// comment\n{"name":"${name}"}`), label: 'comment' })],
      [1, () => ({ body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"name":')]), label: 'BOM + truncated' })],
      [1, () => ({ body: Buffer.from('['.repeat(depth) + ']'.repeat(depth - 1)), label: 'deep + unbalanced' })],
      [1, () => ({ body: Buffer.from('{"a":'.repeat(depth / 5) + '1'), label: 'deep objects, truncated' })],
      [1, () => ({ body: Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc0, 0xaf, 0x22]), label: 'invalid UTF-8' })],
      [1, () => ({ body: Buffer.from(`{"name":"${name}\u0000`), label: 'raw NUL, truncated' })],
      [1, () => ({ body: Buffer.from(`{"name":"${name}\n"}`), label: 'raw newline in string' })],
      [1, () => ({ body: Buffer.from(r.pick(['"just a string"', '42', 'null', 'true'])), label: 'non-object top level (strict)' })],
    ])();
  }

  private idPath(template: string, id: string): string {
    return template.replace(':id', pathSegment(id));
  }

  private realAgent(): string {
    return this.rng.pick(this.ctx.agentIds);
  }

  /** A state-changing route aimed at a real agent: the request must be refused for another reason. */
  private realCommandPath(): string {
    const action = this.rng.pick(['stop', 'start', 'destroy', 'hibernate', 'wake']);
    return `/v1/agents/${this.realAgent()}/${action}`;
  }

  next(): FuzzRequest {
    const r = this.rng;
    return r.weighted<() => FuzzRequest>([
      [3, () => this.auth_()],
      [3, () => this.ids()],
      [4, () => this.createBodies()],
      [3, () => this.badJson()],
      [1, () => this.hugeBodies()],
      [3, () => this.contentTypes()],
      [2, () => this.queries()],
      [3, () => this.methodsAndPaths()],
      [3, () => this.oddHeaders()],
      [1, () => this.board()],
      [1, () => this.refusedByState()],
      [3, () => this.tokens()],
      [2, () => this.scopes()],
      [3, () => this.webhooks()],
      [3, () => this.findings()],
      [3, () => this.pools()],
      [4, () => this.consoleForms()],
      [2, () => this.waitAndStream()],
      [3, () => this.badText()],
      [2, () => this.bigNumbers()],
      [2, () => this.deepNesting()],
      [3, () => this.prototypeKeys()],
    ])();
  }

  /** A body for a route that takes one, valid but for `defect` placed in the field `at` names. */
  private bodyWith(defect: unknown, at: 'name' | 'userData' | 'label-value' | 'label-key' | 'ssh-key' | 'webhook-url' | 'token-name'): { path: string; body: Buffer } {
    const name = this.validName();
    const key = typeof defect === 'string' ? defect : 'k';
    switch (at) {
      case 'name':
        return { path: '/v1/agents', body: json({ name: `${name}${String(defect)}` }) };
      case 'userData':
        return { path: '/v1/agents', body: json({ name, userData: `#!/bin/sh\necho ${String(defect)}\n` }) };
      case 'label-value':
        return { path: '/v1/agents', body: json({ name, labels: { tier: defect } }) };
      case 'label-key':
        return { path: '/v1/agents', body: json({ name, labels: { [key]: 'x' } }) };
      case 'ssh-key':
        return { path: '/v1/agents', body: json({ name, sshKeys: [`ops${String(defect)}`] }) };
      case 'webhook-url':
        return { path: '/v1/webhooks', body: json({ url: `https://93.184.215.14/${String(defect)}` }) };
      case 'token-name':
        return { path: '/v1/tokens', body: json({ name: `${name}${String(defect)}`, scope: 'read' }) };
    }
  }

  private postJson(category: string, path: string, body: Buffer): FuzzRequest {
    return { category, method: 'POST', path, headers: [...this.auth(), 'content-type', 'application/json'], body, readOnly: false };
  }

  /** NUL characters and unpaired surrogates in query strings and in every kind of body string. */
  private badText(): FuzzRequest {
    const r = this.rng;
    const where = r.pick(['name', 'userData', 'label-value', 'label-key', 'ssh-key', 'webhook-url', 'token-name'] as const);
    return r.weighted<() => FuzzRequest>([
      [3, () => {
        const { path, body } = this.bodyWith(r.pick(['\u0000', 'a\u0000b', '\u0000\u0000']), where);
        return this.postJson('text-nul', path, body);
      }],
      [3, () => {
        // JSON.stringify escapes a lone surrogate as \udXXX, which JSON.parse turns back into one.
        const { path, body } = this.bodyWith(r.pick(['\ud800', '\udfff', 'a\udbffb', '\udc00\ud800']), where);
        return this.postJson('text-surrogate', path, body);
      }],
      [1, () => this.postJson('text-surrogate', '/v1/agents', Buffer.from(`{"name":"${this.validName()}","userData":"#!/bin/sh\\n\\ud83d"}`))],
      [3, () => ({
        category: 'text-query',
        method: 'GET',
        path: `${r.pick(['/v1/agents', '/v1/operations', `/v1/agents/${this.realAgent()}/events`, '/v1/tokens', '/v1/webhooks'])}?${r.pick([
          'name=a%00b',
          'name=%00',
          'label=tier=%00',
          'label=%00=x',
          'status=active%00',
          'type=stop%00',
          `agentId=${r.uuid()}%00`,
          'since=2030-01-01T00:00:00Z%00',
          `cursor=${Buffer.from(`${r.uuid()}\u0000`).toString('base64url')}`,
          `cursor=%00${Buffer.from(r.uuid()).toString('base64url')}`,
          'includeRevoked=true%00',
          'limit=1%00',
        ])}`,
        headers: this.auth(),
        readOnly: true,
      })],
    ])();
  }

  /** Numbers beyond what their column or a JavaScript number holds: cursors, limits, offsets, waits, body numbers. */
  private bigNumbers(): FuzzRequest {
    const r = this.rng;
    const huge = r.pick(['9999999999999999999', '9223372036854775808', '18446744073709551616', '99999999999999999999999999', '1e400', '-9223372036854775809', '1'.padEnd(400, '0')]);
    return r.weighted<() => FuzzRequest>([
      [4, () => ({
        category: 'big-number',
        method: 'GET',
        path: `/v1/agents/${this.realAgent()}/events?cursor=${Buffer.from(huge).toString('base64url')}`,
        headers: this.auth(),
        readOnly: true,
      })],
      [3, () => ({
        category: 'big-number',
        method: 'GET',
        path: `${r.pick(['/v1/agents', '/v1/operations', `/v1/agents/${this.realAgent()}/events`, `/v1/webhooks/${r.uuid()}/deliveries`])}?${r.pick(['limit', 'offset', 'cursor'])}=${pathSegment(huge)}`,
        headers: this.auth(),
        readOnly: true,
      })],
      [1, () => ({
        category: 'big-number',
        method: 'GET',
        path: `/v1/operations/${r.pick(this.ctx.operationIds)}?wait=${pathSegment(huge)}`,
        headers: this.auth(),
        readOnly: true,
      })],
      [2, () => this.postJson('big-number', '/v1/agents', Buffer.from(`{"name":${huge},"labels":{"n":${huge}},"sshKeys":[${huge}]}`))],
      [1, () => this.postJson('big-number', '/v1/tokens', Buffer.from(`{"name":"${this.validName()}","scope":"read","expiresAt":${huge}}`))],
    ])();
  }

  /** Valid JSON nested far deeper than any request needs, in every place a body has room for it. */
  private deepNesting(): FuzzRequest {
    const r = this.rng;
    const depth = r.weighted([
      [3, r.int(33, 100)],
      [2, r.int(100, 2000)],
      [1, r.int(2000, 12_000)],
    ]);
    const nested = r.bool() ? `${'{"a":'.repeat(depth)}"x"${'}'.repeat(depth)}` : `${'['.repeat(depth)}"x"${']'.repeat(depth)}`;
    const name = this.validName();
    const [path, body] = r.pick<[string, string]>([
      ['/v1/agents', `{"name":"${name}","labels":${nested}}`],
      ['/v1/agents', `{"name":"${name}","sshKeys":${nested}}`],
      ['/v1/agents', `{"name":"${name}","extra":${nested}}`],
      ['/v1/agents', nested],
      ['/v1/webhooks', `{"url":"https://93.184.215.14/","events":${nested}}`],
      ['/v1/tokens', `{"name":"${name}","scope":${nested}}`],
      [this.realCommandPath(), `{"x":${nested}}`],
    ]);
    return this.postJson('deep-json', path, Buffer.from(body));
  }

  /** __proto__, constructor and prototype as keys at every depth, in bodies that are otherwise valid. */
  private prototypeKeys(): FuzzRequest {
    const r = this.rng;
    const key = r.pick(['__proto__', 'constructor', 'prototype']);
    const value = r.pick(['"x"', '{"polluted":"yes"}', '{"prototype":{"isAdmin":true}}', '[]', 'null', '1']);
    const name = this.validName();
    const [path, body] = r.pick<[string, string]>([
      ['/v1/agents', `{"name":"${name}","labels":{"${key}":${value}}}`],
      ['/v1/agents', `{"name":"${name}","labels":{"tier":"gold","${key}":"x"}}`],
      ['/v1/agents', `{"${key}":${value},"name":"${name}"}`],
      ['/v1/agents', `{"name":"${name}","sshKeys":[{"${key}":${value}}]}`],
      ['/v1/webhooks', `{"url":"https://93.184.215.14/hook","events":["agent.status_changed"],"${key}":${value}}`],
      ['/v1/webhooks', `{"url":"https://93.184.215.14/hook","events":[{"${key}":${value}}]}`],
      ['/v1/tokens', `{"name":"${name}","scope":"read","${key}":${value}}`],
      [this.realCommandPath(), `{"${key}":${value}}`],
    ]);
    return this.postJson('proto-keys', path, Buffer.from(body));
  }

  private auth_(): FuzzRequest {
    const r = this.rng;
    const route = r.pick(PROTECTED_ROUTES);
    const path = route.path.includes(':id') ? route.path.replace(':id', r.bool() ? this.realAgent() : r.uuid()) : route.path;
    const token = this.ctx.token;
    const headers: string[] = r.weighted<() => string[]>([
      [3, () => []],
      [1, () => ['authorization', 'Bearer']],
      [1, () => ['authorization', 'Bearer ']],
      [2, () => ['authorization', `Bearer ${r.hex(48)}`]],
      [1, () => ['authorization', `Bearer ${token}x`]],
      [1, () => ['authorization', `Bearer ${token.slice(0, -1)}`]],
      [1, () => ['authorization', `Bearer ${token} extra`]],
      [1, () => ['authorization', `Basic ${Buffer.from(`admin:${token}`).toString('base64')}`]],
      [1, () => ['authorization', `Token ${token}`]],
      [1, () => ['authorization', token]],
      [1, () => ['authorization', `Bearer ${'A'.repeat(r.int(1000, 8000))}`]],
      [1, () => ['authorization', `Bearer ${token.toUpperCase()}`]],
      [1, () => ['authorization', `Bearer t\u00f6ken`]],
      [1, () => ['authorization', `Bearer ${r.pick(SQL_INJECTIONS).replace(/\s/g, '')}`]],
      // Node keeps the first of duplicated Authorization headers: a wrong one first must still be refused.
      [1, () => ['authorization', 'Bearer wrong', 'authorization', `Bearer ${token}`]],
    ])();
    const withBody = route.method === 'POST';
    return {
      category: 'auth',
      method: route.method,
      path,
      headers: withBody ? [...headers, 'content-type', 'application/json'] : headers,
      body: withBody ? Buffer.from(VALID_BODY_JSON(this.validName())) : undefined,
      readOnly: false,
    };
  }

  private ids(): FuzzRequest {
    const r = this.rng;
    const route = r.pick(ROUTES_WITH_ID);
    const post = route.method === 'POST';
    return {
      category: 'ids',
      method: route.method,
      path: this.idPath(route.template, this.badId()),
      headers: [...this.auth(), ...(post && r.bool() ? ['content-type', 'application/json'] : [])],
      body: post && r.bool() ? Buffer.from('{}') : undefined,
      readOnly: route.method === 'GET',
    };
  }

  private createBodies(): FuzzRequest {
    const { body } = this.badCreateBody();
    return {
      category: 'create-body',
      method: 'POST',
      path: '/v1/agents',
      headers: [...this.auth(), 'content-type', this.rng.pick(['application/json', 'application/json; charset=utf-8', 'application/merge-patch+json'])],
      body,
      readOnly: false,
    };
  }

  private badJson(): FuzzRequest {
    const r = this.rng;
    const { body } = this.malformedJson();
    return {
      category: 'bad-json',
      method: 'POST',
      path: r.bool(0.6) ? '/v1/agents' : this.realCommandPath(),
      headers: [...this.auth(), 'content-type', r.pick(['application/json', 'application/json; charset=utf-8', 'application/problem+json'])],
      body,
      chunked: r.bool(0.2),
      readOnly: false,
    };
  }

  private hugeBodies(): FuzzRequest {
    const r = this.rng;
    const size = r.weighted([
      // Over the 64 KiB body limit (room for 32 KiB of user data).
      [6, r.int(64 * 1024 + 1, 128 * 1024)],
      [3, r.int(128 * 1024, 512 * 1024)],
      [1, r.int(512 * 1024, 2 * 1024 * 1024)],
    ]);
    const body = Buffer.from(JSON.stringify({ name: this.validName(), pad: 'x'.repeat(size) }));
    return {
      category: 'huge-body',
      method: 'POST',
      path: r.bool() ? '/v1/agents' : this.realCommandPath(),
      headers: [...this.auth(), 'content-type', r.pick(['application/json', 'text/plain', 'application/octet-stream'])],
      body,
      chunked: r.bool(0.3),
      readOnly: false,
    };
  }

  private contentTypes(): FuzzRequest {
    const r = this.rng;
    const name = this.validName();
    // Non-JSON media types are refused whatever the body; JSON-family types only ever carry bad bodies.
    const variant = r.weighted<() => { headers: string[]; body: Buffer; createOnly?: boolean }>([
      [3, () => ({ headers: ['content-type', r.pick(['text/plain', 'text/html', 'application/xml', 'text/json', 'application/javascript', 'application/octet-stream', 'image/png', 'application/jsonx', 'json', 'application/json-seq'])], body: Buffer.from(VALID_BODY_JSON(name)) })],
      [2, () => ({ headers: ['content-type', 'application/x-www-form-urlencoded'], body: Buffer.from(`name=${name}`) })],
      [1, () => ({ headers: ['content-type', 'multipart/form-data; boundary=X'], body: Buffer.from(`--X\r\nContent-Disposition: form-data; name="name"\r\n\r\n${name}\r\n--X--\r\n`) })],
      [2, () => ({ headers: [], body: Buffer.from(VALID_BODY_JSON(name)) })],
      [2, () => ({ headers: ['content-type', r.pick(['application/json; charset=latin1', 'application/json; charset=iso-8859-1', 'application/json; charset=koi8-r', 'application/json; charset=bogus'])], body: Buffer.from(VALID_BODY_JSON(name)) })],
      [1, () => ({ headers: ['content-type', 'application/json; charset=utf-16'], body: Buffer.from(VALID_BODY_JSON(name), 'utf8') })],
      [1, () => ({ headers: ['content-type', r.pick(['', ';', 'application/', '/json', '*/*', 'application', 'json/application'])], body: Buffer.from(VALID_BODY_JSON(name)) })],
      // Broken parameters on a JSON type are tolerated (the type is still JSON), so these carry bad JSON.
      [1, () => ({ headers: ['content-type', r.pick(['application/json;;;', 'application/json; charset="', 'application/json; x'])], body: this.malformedJson().body })],
      // Random bytes may happen to be a valid brotli stream of nothing, which is an empty body: only
      // create (which needs a name) is sure to refuse whatever these decode to.
      [
        2,
        () => ({
          headers: ['content-type', 'application/json', 'content-encoding', r.pick(['gzip', 'deflate', 'br', 'compress', 'x-bogus', 'gzip, gzip'])],
          body: Buffer.from(r.hex(r.int(1, 200))),
          createOnly: true,
        }),
      ],
      [1, () => ({ headers: ['content-type', 'application/json', 'content-encoding', 'gzip'], body: gzipSync(Buffer.from(`{"name":"${name}",`)) })],
      [1, () => ({ headers: ['content-type', 'application/json', 'content-encoding', 'gzip'], body: gzipSync(Buffer.from('x'.repeat(r.int(20_000, 200_000)))) })],
      // Node keeps the first of duplicated Content-Type headers.
      [1, () => ({ headers: ['content-type', 'text/plain', 'content-type', 'application/json'], body: Buffer.from(VALID_BODY_JSON(name)) })],
    ])();
    return {
      category: 'content-type',
      method: 'POST',
      path: variant.createOnly || r.bool(0.6) ? '/v1/agents' : this.realCommandPath(),
      headers: [...this.auth(), ...variant.headers],
      body: variant.body,
      chunked: r.bool(0.2),
      readOnly: false,
    };
  }

  private queries(): FuzzRequest {
    const r = this.rng;
    const q = r.weighted<() => string>([
      [2, () => `limit=${r.pick(['0', '-1', '101', 'abc', '1.5', '1e3', '', '0x10', '9999999999', '%00', '1%20', '+1', '%091'])}`],
      [1, () => 'limit=1&limit=2'],
      [2, () => `status=${pathSegment(r.pick(['bogus', 'ACTIVE', 'active,bogus', "active' OR 1=1", '__proto__', 'active;paused']))}`],
      [2, () => `cursor=${pathSegment(r.pick(['garbage', '', '%%%', 'AAAA', Buffer.from("' OR 1=1").toString('base64url'), 'x'.repeat(300)]))}`],
      [1, () => `cursor=${Buffer.from(r.uuid()).toString('base64url')}&offset=1`],
      [1, () => `offset=${r.pick(['-1', 'x', '1000001', '1.2'])}`],
      [2, () => `${r.pick(['unknown', 'sort', 'order', 'where', 'filter[status]', 'include'])}=${pathSegment(r.pick(SQL_INJECTIONS))}`],
      [2, () => r.pick(['__proto__[polluted]=yes', '__proto__=x', 'constructor[prototype][polluted]=yes', 'constructor.prototype.polluted=yes', '__proto__.polluted=yes'])],
      [1, () => `limit=1&${'x'.repeat(r.int(2000, 9000))}=1`],
      [1, () => '%'],
      [1, () => 'limit=%zz'],
      [2, () => `type=${pathSegment(r.pick(['resize', 'STOP', 'stop,,bogus', "stop' OR 1=1", '__proto__', 'stop;start']))}`],
      [2, () => `agentId=${pathSegment(r.pick(['x', r.uuid().slice(1), ...SQL_INJECTIONS, `${r.uuid()},${r.uuid()}`]))}`],
      [2, () => `label=${pathSegment(r.pick(['nokey', '=v', '-x=1', 'a=white space', `${'k'.repeat(70)}=v`, "a=1' OR '1'='1", '__proto__=x', 'a=b&label=', '{"a":"b"}']))}`],
      [1, () => `name=${pathSegment(r.pick(['', 'x'.repeat(70), ...SQL_INJECTIONS]))}`],
      [2, () => `since=${pathSegment(r.pick(['yesterday', '2030-13-01T00:00:00Z', '1700000000', '2030-01-01', '2030-01-01T00:00:00', "2030' OR 1=1", 'now()', '-infinity']))}`],
    ])();
    const path = r.weighted([
      [3, '/v1/agents'],
      [2, `/v1/agents/${this.realAgent()}/events`],
      [3, '/v1/operations'],
    ]);
    return {
      category: 'query',
      method: r.bool(0.85) ? 'GET' : 'HEAD',
      path: `${path}?${q}`,
      headers: this.auth(),
      readOnly: true,
    };
  }

  private methodsAndPaths(): FuzzRequest {
    const r = this.rng;
    const authed = r.bool(0.7);
    const headers = authed ? this.auth() : [];
    return r.weighted<() => FuzzRequest>([
      [
        4,
        () => {
          const route = r.pick(PROTECTED_ROUTES);
          const method = r.pick(ODD_METHODS);
          const path = route.path.replace(':id', r.bool() ? this.realAgent() : r.uuid());
          const body = r.bool(0.3) ? Buffer.from(VALID_BODY_JSON(this.validName())) : undefined;
          return {
            category: 'method',
            method,
            path,
            headers: [...headers, ...(body ? ['content-type', 'application/json'] : [])],
            body,
            readOnly: false,
          };
        },
      ],
      [
        2,
        () => ({
          category: 'method',
          method: r.pick(['OPTIONS', 'HEAD']),
          path: r.pick(PROTECTED_ROUTES).path.replace(':id', this.realAgent()),
          headers,
          readOnly: true,
        }),
      ],
      [
        4,
        () => ({
          category: 'path',
          method: r.pick(['GET', 'HEAD', 'OPTIONS', 'DELETE', 'PUT']),
          path: r.pick([
            '/',
            '/v1',
            '/v1/',
            '/v2/agents',
            '/v1/agent',
            '/v1//agents',
            '/V1/AGENTS/' + r.uuid(),
            '/v1/agents/../agents',
            '/v1/agents/%2e%2e/%2e%2e/etc/passwd',
            '/%2e%2e/%2e%2e/etc/passwd',
            '/v1/agents/' + this.realAgent() + '/../../operations',
            '/v1/agents/' + this.realAgent() + '/events/extra',
            '/v1/agents/' + this.realAgent() + '/resize',
            '/v1/operations',
            '/v1/provisioning-jobs',
            '/v1/provisioning-jobs/' + r.uuid(),
            '/metrics/x',
            '/healthz/..',
            '/v1/openapi.json/x',
            '/.env',
            '/.git/config',
            '/node_modules/.bin/tsx',
            '/src/config.ts',
            '/admin',
            '/admin/queues/../../v1/agents',
            '/v1/agents;jsessionid=1',
            '/v1/agents/%',
            '/v1/%00',
            '/\\v1\\agents',
            '/' + 'a/'.repeat(r.int(100, 2000)),
            '/v1/agents/' + 'b'.repeat(r.int(1000, 6000)),
            '*',
          ]),
          headers,
          readOnly: true,
        }),
      ],
      [
        1,
        () => ({
          category: 'path',
          method: 'POST',
          path: r.pick(['/', '/v1', '/v2/agents', '/v1/agents/' + r.uuid() + '/resize', '/healthz', '/metrics', '/readyz', '/v1/openapi.json', '/v1/operations']),
          headers: [...headers, 'content-type', 'application/json'],
          body: Buffer.from(VALID_BODY_JSON(this.validName())),
          readOnly: false,
        }),
      ],
      [1, () => ({ category: 'path', method: 'GET', path: 'http://evil.example/v1/agents', headers, readOnly: true })],
    ])();
  }

  private oddHeaders(): FuzzRequest {
    const r = this.rng;
    const name = this.validName();
    const validCreate = Buffer.from(VALID_BODY_JSON(name));
    return r.weighted<() => FuzzRequest>([
      [
        4,
        () => {
          // A valid body with a bad Idempotency-Key: the key alone must get the request refused.
          const key = r.pick([
            '',
            ' ',
            'a b',
            'x'.repeat(201),
            'x'.repeat(r.int(202, 6000)),
            'caf\u00e9',
            'tab\there',
            '\u00ff\u00fe',
            "key'; DROP TABLE operations; --",
          ]);
          const toCommand = r.bool(0.4);
          return {
            category: 'idempotency-key',
            method: 'POST',
            path: toCommand ? this.realCommandPath() : '/v1/agents',
            headers: [...this.auth(), 'content-type', 'application/json', 'idempotency-key', key],
            body: toCommand ? undefined : validCreate,
            readOnly: false,
          };
        },
      ],
      [
        2,
        () => ({
          // Duplicated Idempotency-Key headers arrive joined with ", ", which no key may contain.
          category: 'idempotency-key',
          method: 'POST',
          path: r.bool() ? '/v1/agents' : this.realCommandPath(),
          headers: [...this.auth(), 'content-type', 'application/json', 'idempotency-key', `k-${r.hex(6)}`, 'idempotency-key', `k-${r.hex(6)}`],
          body: validCreate,
          readOnly: false,
        }),
      ],
      [
        2,
        () => ({
          category: 'headers',
          method: 'POST',
          path: '/v1/agents',
          // An odd request id and other odd headers around a request refused for its body.
          headers: [
            ...this.auth(),
            'content-type',
            'application/json',
            'x-request-id',
            r.pick(['', "' OR 1=1 --", 'x'.repeat(500), '../../etc', '\u00e9\u00e8', '<script>', '${jndi:x}']),
            'x-forwarded-for',
            r.pick(['127.0.0.1, 10.0.0.1', 'evil', '::1']),
            'accept',
            r.pick(['text/html', 'application/xml', '*/*', 'application/json;q=0', '']),
            'host',
            r.pick(['evil.example', '', 'x'.repeat(300), 'localhost:99999']),
          ],
          body: json({ name: this.badName() }),
          readOnly: false,
        }),
      ],
      [
        1,
        () => ({
          category: 'headers',
          method: 'POST',
          path: '/v1/agents',
          headers: [...this.auth(), 'content-type', 'application/json', 'expect', '100-continue'],
          body: json({ name: this.badName() }),
          readOnly: false,
        }),
      ],
      [
        1,
        () => {
          const many: string[] = [];
          for (let i = 0, n = r.int(50, 150); i < n; i++) many.push(`x-fuzz-${i}`, r.hex(r.int(1, 40)));
          return {
            category: 'headers',
            method: 'GET',
            path: '/v1/agents/' + r.uuid(),
            headers: [...this.auth(), ...many],
            readOnly: true,
          };
        },
      ],
    ])();
  }

  private board(): FuzzRequest {
    const r = this.rng;
    const auth = r.weighted<string[]>([
      [2, []],
      [1, ['authorization', `Basic ${Buffer.from('admin:wrong').toString('base64')}`]],
      [1, ['authorization', `Basic ${Buffer.from(`root:${this.ctx.readToken}`).toString('base64')}`]],
      [1, ['authorization', `Basic ${Buffer.from(`admin:${this.ctx.operateToken}`).toString('base64')}`]],
      [1, ['authorization', 'Basic !!!notbase64']],
      [1, ['authorization', `Basic ${Buffer.from('admin').toString('base64')}`]],
      // The admin tokens open the board, so only tokens of lower scopes and forgeries are sent here.
      [1, ['authorization', `Bearer ${this.ctx.readToken}`]],
      [1, ['authorization', `Bearer ${this.ctx.operateToken}`]],
      [1, ['authorization', `Bearer tf_${'A'.repeat(43)}`]],
    ]);
    const queue = r.pick(['provision', 'stop', 'rollback', '__proto__', '..', 'nope']);
    const target = r.pick([
      { method: 'GET', path: '/admin/queues' },
      { method: 'GET', path: '/admin/queues/api/queues' },
      { method: 'PUT', path: `/admin/queues/api/queues/${queue}/retry/failed` },
      { method: 'PUT', path: `/admin/queues/api/queues/${queue}/clean/completed` },
      { method: 'PUT', path: `/admin/queues/api/queues/${queue}/pause` },
      { method: 'PUT', path: `/admin/queues/api/queues/${queue}/empty` },
      { method: 'PUT', path: `/admin/queues/api/queues/${queue}/op-x/promote` },
      { method: 'DELETE', path: `/admin/queues/api/queues/${queue}/op-x` },
      { method: 'POST', path: `/admin/queues/api/queues/${queue}/add` },
    ]);
    return {
      category: 'bull-board',
      method: target.method,
      path: target.path,
      headers: [...auth, 'content-type', 'application/json'],
      body: target.method === 'GET' ? undefined : json({ name: 'x', data: {} }),
      readOnly: false,
    };
  }

  /** A token name that is invalid by construction (token names allow more than agent names). */
  private badTokenName(): unknown {
    const r = this.rng;
    const name = r.weighted<() => unknown>([
      [3, () => this.badName()],
      [1, () => r.pick(['.hidden', '_under', 'a/b', 'a:b', 'a@b', 'tab\there', 'a'.repeat(r.int(65, 500))])],
    ])();
    // A string that happens to be a valid token name gets a space, which no name may contain.
    return typeof name === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) ? `${name} ` : name;
  }

  /** /v1/tokens with the admin token and a defect: bad body, taken or reserved name, bad id. */
  private tokens(): FuzzRequest {
    const r = this.rng;
    const scope = r.pick(['read', 'operate', 'admin']);
    const body = r.weighted<() => Buffer>([
      [3, () => json({ name: this.badTokenName(), scope })],
      [2, () => json({ name: this.validName(), scope: r.pick<unknown>(['root', 'ADMIN', '', 'read,admin', null, 1, ['admin'], { $ne: 'x' }]) })],
      [1, () => json({ name: this.validName() })],
      [1, () => json({ scope })],
      [2, () => json({ name: r.pick(['bootstrap', 'BOOTSTRAP', r.pick(this.ctx.tokenNames)]), scope })],
      [
        2,
        () =>
          json({
            name: this.validName(),
            scope,
            expiresAt: r.pick<unknown>(['2001-01-01T00:00:00Z', 'tomorrow', '2030-02-30T00:00:00Z', '2030-01-01', 1_900_000_000, true, '', '0000-00-00T00:00:00Z']),
          }),
      ],
      [1, () => json({ name: this.validName(), scope, [r.pick(['token', 'tokenHash', 'id', 'revokedAt', 'lastUsedAt'])]: 'x' })],
      [1, () => Buffer.from(`{"name":"${this.validName()}","scope":"${scope}","__proto__":{"isAdmin":true}}`)],
      [1, () => this.malformedJson().body],
      [1, () => Buffer.from(r.pick(['[]', '"x"', 'null', '{}']))],
    ]);
    return r.weighted<() => FuzzRequest>([
      [5, () => ({ category: 'tokens', method: 'POST', path: '/v1/tokens', headers: [...this.auth(), 'content-type', 'application/json'], body: body(), readOnly: false })],
      [
        2,
        () => ({
          category: 'tokens',
          method: 'GET',
          path: `/v1/tokens?${r.pick(['includeRevoked=yes', 'includeRevoked=1', 'includeRevoked=', 'scope=admin', `name=${pathSegment(r.pick(SQL_INJECTIONS))}`])}`,
          headers: this.auth(),
          readOnly: true,
        }),
      ],
      [2, () => ({ category: 'tokens', method: 'DELETE', path: `/v1/tokens/${pathSegment(this.badId())}`, headers: this.auth(), readOnly: false })],
      [1, () => ({ category: 'tokens', method: r.pick(['PUT', 'PATCH', 'POST']), path: `/v1/tokens/${r.pick(this.ctx.tokenIds)}`, headers: this.auth(), readOnly: false })],
    ])();
  }

  /**
   * /v1/webhooks with the admin token and a defect: receivers on refused addresses (the fuzz stack
   * does not allow private URLs), URLs that are not http(s), unknown event types, extra fields; bad
   * ids and queries; and lower scopes.
   */
  private webhooks(): FuzzRequest {
    const r = this.rng;
    const refusedUrl = () =>
      r.pick<unknown>([
        'http://127.0.0.1/hook',
        'http://localhost:3000/hook',
        'http://10.0.0.8/hook',
        'http://172.20.1.1/hook',
        'http://192.168.1.1/',
        'http://100.101.102.103/',
        'http://169.254.169.254/latest/meta-data/',
        'http://[::1]/',
        'http://[fd00::1]/',
        'http://[::ffff:127.0.0.1]/',
        'http://0.0.0.0/',
        'http://2130706433/',
        'http://0x7f000001/',
        'file:///etc/passwd',
        'gopher://93.184.215.14/',
        'javascript:alert(1)',
        'http://user:pw@93.184.215.14/',
        '//93.184.215.14/hook',
        'not a url',
        '',
        `http://93.184.215.14/${'a'.repeat(2100)}`,
        1,
        null,
        ['http://93.184.215.14/'],
      ]);
    const body = r.weighted<() => Buffer>([
      [5, () => json({ url: refusedUrl(), ...(r.bool() ? { events: ['agent.status_changed'] } : {}) })],
      [2, () => json({ url: 'https://93.184.215.14/hook', events: r.pick<unknown>([[], ['agent.exploded'], 'agent.status_changed', [null], [1], ['*']]) })],
      [1, () => json({ url: 'https://93.184.215.14/hook', [r.pick(['secret', 'id', 'createdBy'])]: 'x' })],
      [1, () => json({ events: ['operation.failed'] })],
      [1, () => Buffer.from(`{"url":"https://93.184.215.14/","__proto__":{"isAdmin":true}}`)],
      [1, () => this.malformedJson().body],
      [1, () => Buffer.from(r.pick(['[]', '"x"', 'null', '{}']))],
    ]);
    const read = ['authorization', `Bearer ${this.ctx.readToken}`];
    const operate = ['authorization', `Bearer ${this.ctx.operateToken}`];
    return r.weighted<() => FuzzRequest>([
      [6, () => ({ category: 'webhooks', method: 'POST', path: '/v1/webhooks', headers: [...this.auth(), 'content-type', 'application/json'], body: body(), readOnly: false })],
      [
        1,
        () => ({
          category: 'webhooks',
          method: 'POST',
          path: '/v1/webhooks',
          headers: [...r.pick([read, operate]), 'content-type', 'application/json'],
          body: json({ url: 'https://93.184.215.14/hook' }),
          readOnly: false,
        }),
      ],
      [1, () => ({ category: 'webhooks', method: 'GET', path: '/v1/webhooks', headers: r.pick([read, operate]), readOnly: false })],
      [1, () => ({ category: 'webhooks', method: 'GET', path: '/v1/webhooks', headers: this.auth(), readOnly: true })],
      [
        2,
        () => ({
          category: 'webhooks',
          method: 'GET',
          path: `/v1/webhooks/${r.uuid()}/deliveries?${r.pick(['limit=0', 'limit=101', 'limit=x', 'cursor=garbage', 'cursor=', 'status=failed', `cursor=${Buffer.from(`x|${r.uuid()}`).toString('base64url')}`])}`,
          headers: this.auth(),
          readOnly: true,
        }),
      ],
      [1, () => ({ category: 'webhooks', method: r.pick(['PUT', 'PATCH', 'POST']), path: `/v1/webhooks/${r.uuid()}`, headers: this.auth(), readOnly: false })],
    ])();
  }

  /** Long polls and the event stream with a defect: every one is refused before it would wait. */
  private waitAndStream(): FuzzRequest {
    const r = this.rng;
    return r.weighted<() => FuzzRequest>([
      [
        3,
        () => ({
          category: 'wait',
          method: 'GET',
          path: `/v1/operations/${r.pick(this.ctx.operationIds)}?wait=${pathSegment(r.pick(['61', '-1', '1.5', 'x', '', '99999999999', '0x10', '1e1', "1' OR 1=1"]))}`,
          headers: this.auth(),
          readOnly: true,
        }),
      ],
      // Not waiting at all: answers at once.
      [1, () => ({ category: 'wait', method: 'GET', path: `/v1/operations/${r.pick(this.ctx.operationIds)}?wait=0`, headers: this.auth(), readOnly: true })],
      [
        2,
        () => ({
          category: 'stream',
          method: 'GET',
          path: `/v1/events/stream?${r.pick(['agentId=x', `agentId=${r.uuid().slice(1)}`, 'since=1', 'agentId=' + pathSegment(r.pick(SQL_INJECTIONS)), '__proto__[x]=1'])}`,
          headers: this.auth(),
          readOnly: true,
        }),
      ],
      [
        2,
        () => ({
          category: 'stream',
          method: 'GET',
          path: '/v1/events/stream',
          headers: [...this.auth(), 'last-event-id', r.pick(['-1', 'abc', '1.5', '9'.repeat(19), '99999999999999999999999', "1' OR 1=1", ' '])],
          readOnly: true,
        }),
      ],
      [1, () => ({ category: 'stream', method: 'GET', path: '/v1/events/stream', headers: [], readOnly: false })],
    ])();
  }

  /** Well-formed requests from a token whose scope is too small: each must be a 403 that changes nothing. */
  private scopes(): FuzzRequest {
    const r = this.rng;
    const read = ['authorization', `Bearer ${this.ctx.readToken}`];
    const operate = ['authorization', `Bearer ${this.ctx.operateToken}`];
    const jsonType = ['content-type', 'application/json'];
    return r.weighted<() => FuzzRequest>([
      [2, () => ({ category: 'scope', method: 'POST', path: '/v1/agents', headers: [...read, ...jsonType], body: Buffer.from(VALID_BODY_JSON(this.validName())), readOnly: false })],
      [2, () => ({ category: 'scope', method: 'POST', path: this.realCommandPath(), headers: read, readOnly: false })],
      [1, () => ({ category: 'scope', method: 'POST', path: '/v1/reconcile', headers: read, readOnly: false })],
      [
        2,
        () => ({
          category: 'scope',
          method: 'POST',
          path: '/v1/tokens',
          headers: [...r.pick([read, operate]), ...jsonType],
          body: json({ name: this.validName(), scope: r.pick(['read', 'admin']) }),
          readOnly: false,
        }),
      ],
      [2, () => ({ category: 'scope', method: 'DELETE', path: `/v1/tokens/${r.pick(this.ctx.tokenIds)}`, headers: r.pick([read, operate]), readOnly: false })],
      [1, () => ({ category: 'scope', method: 'GET', path: '/v1/tokens', headers: r.pick([read, operate]), readOnly: false })],
    ])();
  }

  /**
   * The console's form posts: without a session (sent to sign-in), with a session but a missing,
   * wrong or foreign CSRF token or origin (403), with a read token's session and its own CSRF token
   * (the API refuses the action), and bodies the form parser refuses. Sign-in with bad tokens.
   */
  private consoleForms(): FuzzRequest {
    const r = this.rng;
    const form = 'application/x-www-form-urlencoded';
    const agent = this.realAgent();
    const target = () =>
      r.pick([
        `/console/agents/${agent}/${r.pick(AGENT_COMMAND_TYPES)}`,
        `/console/findings/${r.pick([...this.ctx.openFindingIds, r.uuid()])}/resolve`,
        '/console/tokens',
        `/console/tokens/${r.pick([...this.ctx.tokenIds, r.uuid()])}/revoke`,
        '/console/webhooks',
        `/console/webhooks/${r.uuid()}/delete`,
        `/console/agents/${pathSegment(r.pick(['x', '..', '%00', ...SQL_INJECTIONS]))}/stop`,
        `/console/agents/${agent}/${pathSegment(r.pick(['explode', 'STOP', '__proto__', 'stop;destroy']))}`,
      ]);
    const fields = () =>
      r.pick([
        `confirm=${encodeURIComponent(r.pick(['fuzz-target-0', 'fuzz-target-1', '', 'x'.repeat(300)]))}`,
        `note=${encodeURIComponent(r.pick(['fixed', '', '\u0000', 'x'.repeat(3000)]))}`,
        `name=${this.validName()}&scope=admin`,
        `name=${this.validName()}&scope=read&expiresAt=${encodeURIComponent(r.pick(['yesterday', '2020-01-01T00:00', "1' OR 1=1"]))}`,
        `url=${encodeURIComponent(r.pick(['https://93.184.215.14/hook', 'http://127.0.0.1/', 'javascript:alert(1)']))}&events=agent.status_changed&events=bogus`,
        '__proto__=x&constructor=y',
        `_csrf=${this.ctx.consoleCsrf}&_csrf=other`,
      ]);
    const cookie = ['cookie', this.ctx.consoleCookie];
    const post = (path: string, headers: string[], body?: string, chunked?: boolean): FuzzRequest => ({
      category: 'console',
      method: 'POST',
      path,
      headers,
      body: body === undefined ? undefined : Buffer.from(body),
      chunked,
      readOnly: false,
    });
    return r.weighted<() => FuzzRequest>([
      // No session: back to sign-in.
      [2, () => post(target(), ['content-type', form], `_csrf=${this.ctx.consoleCsrf}&${fields()}`)],
      [1, () => post(target(), [...this.auth(), 'content-type', form], `_csrf=${this.ctx.consoleCsrf}&${fields()}`)],
      [1, () => post(target(), ['cookie', r.pick([`tailfleet_console=${r.hex(40)}`, 'tailfleet_console=v1.a.b.c', `tailfleet_console=${'A'.repeat(5000)}`, 'tailfleet_console='])], `_csrf=x&${fields()}`)],
      // A session, but the form is not its own.
      [3, () => post(target(), [...cookie, 'content-type', form], r.pick([fields(), `_csrf=${r.hex(32)}&${fields()}`, `_csrf=&${fields()}`]))],
      [1, () => post(target(), [...cookie, 'content-type', form, 'origin', r.pick(['https://evil.example', 'null', 'http://127.0.0.1:1'])], `_csrf=${this.ctx.consoleCsrf}&${fields()}`)],
      // The read token's own session and CSRF token: the API refuses every action.
      [4, () => post(target(), [...cookie, 'content-type', form], `_csrf=${encodeURIComponent(this.ctx.consoleCsrf)}&${fields()}`)],
      // Bodies the form parser refuses.
      [1, () => post(target(), [...cookie, 'content-type', form], `_csrf=${this.ctx.consoleCsrf}&pad=${'x'.repeat(r.int(16 * 1024 + 1, 64 * 1024))}`)],
      [1, () => post(target(), [...cookie, 'content-type', form], Array.from({ length: 60 }, (_, i) => `f${i}=1`).join('&'))],
      [1, () => post(target(), [...cookie, 'content-type', `${form}; charset=${r.pick(['utf-7', 'koi8-r', 'nonsense'])}`], `_csrf=${this.ctx.consoleCsrf}`)],
      [1, () => post(target(), [...cookie, 'content-type', form, 'content-encoding', r.pick(['gzip', 'br', 'deflate'])], 'not compressed')],
      [1, () => post(target(), [...cookie, 'content-type', r.pick(['application/json', 'text/plain', 'multipart/form-data; boundary=x'])], JSON.stringify({ _csrf: this.ctx.consoleCsrf }))],
      // Sign-in with what is not a token.
      [2, () => post('/console/sign-in', ['content-type', form], `token=${encodeURIComponent(r.pick(['', 'tf_' + r.hex(20), `${this.ctx.token}x`, 'A'.repeat(2000), "' OR 1=1 --", '\u0000']))}&next=${encodeURIComponent(r.pick(['/console', 'https://evil.example/', '//evil.example', '/console/../admin']))}`)],
      [1, () => post('/console/sign-in', ['content-type', form, 'origin', 'https://evil.example'], `token=${encodeURIComponent(this.ctx.token)}`)],
    ])();
  }

  /**
   * Pools: creates and changes with a defect, claims and deletes of pools that do not exist, names
   * that are not pool names, a lower scope; the listing is a read. No pool exists, so nothing may
   * be created, claimed or destroyed.
   */
  private pools(): FuzzRequest {
    const r = this.rng;
    const jsonType = ['content-type', 'application/json'];
    const req = (method: string, path: string, headers: string[], body?: Buffer, readOnly = false): FuzzRequest => ({ category: 'pools', method, path, headers, body, readOnly });
    const name = () => r.pick(['web', 'ci-runners', `p${r.int(0, 999)}`]);
    const badName = () => pathSegment(r.pick(['Web', 'a_b', '-x', 'x-', `${'a'.repeat(41)}`, '..', '%00', ' ', 'w%2Fx', ...SQL_INJECTIONS]));
    const badSchedule = () =>
      r.pick<unknown>([
        { cron: '61 * * * *', timezone: 'UTC', minReady: 1 },
        { cron: '0 0 8 * * *', timezone: 'UTC', minReady: 1 },
        { cron: '0 8 * * *', timezone: 'Mars/Olympus', minReady: 1 },
        { cron: '0 8 * * *', timezone: 'Europe/Berlin', minReady: -1 },
        { cron: '0 8 * * *', timezone: 'Europe/Berlin' },
        { cron: 'every morning', timezone: 'UTC', minReady: 1 },
        { cron: '0 8 * * *', timezone: 'UTC', minReady: 1, extra: true },
        '0 8 * * *',
        null,
      ]);
    const badCreate = () =>
      r.pick<unknown>([
        {},
        { name: name(), minReady: 1 },
        { name: name(), standby: 'running' },
        { name: name(), minReady: -1, standby: 'running' },
        { name: name(), minReady: 101, standby: 'running' },
        { name: name(), minReady: 1.5, standby: 'running' },
        { name: name(), minReady: '1', standby: 'running' },
        { name: name(), minReady: 1, standby: 'warm' },
        { name: name(), minReady: 3, standby: 'running', maxSize: 2 },
        { name: name(), minReady: 1, standby: 'running', maxSize: 0 },
        { name: name(), minReady: 1, standby: 'running', schedules: [badSchedule()] },
        { name: name(), minReady: 0, standby: 'running', maxSize: 1, schedules: [{ cron: '0 8 * * *', timezone: 'UTC', minReady: 2 }] },
        { name: name(), minReady: 1, standby: 'running', schedules: Array.from({ length: 21 }, () => ({ cron: '0 8 * * *', timezone: 'UTC', minReady: 1 })) },
        { name: name(), minReady: 1, standby: 'running', spec: { labels: { 'managed-by': 'me' } } },
        { name: name(), minReady: 1, standby: 'running', spec: { name: 'x' } },
        { name: name(), minReady: 1, standby: 'running', spec: { serverType: 'CX22!' } },
        { name: 'Bad Name', minReady: 1, standby: 'running' },
        { name: 'a'.repeat(41), minReady: 1, standby: 'running' },
        { name: name(), minReady: 1, standby: 'running', extra: 1 },
        [],
        'pool',
      ]);
    return r.weighted<() => FuzzRequest>([
      [5, () => req('POST', '/v1/pools', [...this.auth(), ...jsonType], json(badCreate()))],
      [1, () => req('POST', '/v1/pools', ['authorization', `Bearer ${this.ctx.readToken}`, ...jsonType], json({ name: name(), minReady: 1, standby: 'running' }))],
      [1, () => req('POST', '/v1/pools', this.auth())],
      [2, () => req('PATCH', `/v1/pools/${name()}`, [...this.auth(), ...jsonType], json(r.pick<unknown>([{}, { minReady: 1 }, { name: 'x' }, { maxSize: 0 }, { schedules: [badSchedule()] }, { standby: 'warm' }])))],
      [2, () => req('POST', `/v1/pools/${name()}/claim${r.bool() ? '' : `?wait=${r.pick(['5', '61', 'x'])}`}`, [...this.auth(), ...jsonType], json(r.pick<unknown>([{}, { leaseSeconds: 0 }, { labels: { 'tailfleet-agent': 'x' } }, { name: 'Bad Name' }, { extra: 1 }])))],
      [1, () => req('DELETE', `/v1/pools/${name()}`, this.auth())],
      [2, () => req(r.pick(['GET', 'PATCH', 'DELETE', 'POST']), `/v1/pools/${badName()}${r.bool() ? '/claim' : ''}`, [...this.auth(), ...jsonType], json({ minReady: 1 }), false)],
      [1, () => req('GET', '/v1/pools', this.auth(), undefined, true)],
      [1, () => req(r.pick(['PUT', 'POST']), `/v1/pools/${name()}/claim/x`, this.auth())],
    ])();
  }

  /**
   * Resolving findings: every request is refused (a lower scope, a bad note, an unknown or resolved
   * finding, a body that is not JSON), and listings with bad filters; valid listings are reads.
   */
  private findings(): FuzzRequest {
    const r = this.rng;
    const open = () => r.pick(this.ctx.openFindingIds);
    const jsonType = ['content-type', 'application/json'];
    const post = (path: string, headers: string[], body?: Buffer): FuzzRequest => ({ category: 'findings', method: 'POST', path, headers, body, readOnly: false });
    const badNote = () =>
      r.pick<unknown>(['', '   ', '\t\n', 'x'.repeat(2001), 7, null, true, ['fixed'], { text: 'fixed' }, 'a\u0000b', '\ud800']);
    return r.weighted<() => FuzzRequest>([
      [3, () => post(`/v1/findings/${open()}/resolve`, [...this.auth(), ...jsonType], json(r.bool(0.8) ? { note: badNote() } : r.pick<unknown>([{}, [], { note: 'fixed', extra: 1 }, { Note: 'fixed' }])))],
      [2, () => post(`/v1/findings/${open()}/resolve`, [...r.pick([['authorization', `Bearer ${this.ctx.readToken}`], ['authorization', `Bearer ${this.ctx.operateToken}`]]), ...jsonType], json({ note: 'fixed by hand' }))],
      [2, () => post(`/v1/findings/${r.pick(this.ctx.resolvedFindingIds)}/resolve`, [...this.auth(), ...jsonType], json({ note: 'again' }))],
      [1, () => post(`/v1/findings/${r.uuid()}/resolve`, [...this.auth(), ...jsonType], json({ note: 'unknown' }))],
      [1, () => post(`/v1/findings/${open()}/resolve`, [...this.auth(), 'content-type', r.pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'])], Buffer.from('note=fixed'))],
      [1, () => post(`/v1/findings/${open()}/resolve`, this.auth())],
      [
        3,
        () => ({
          category: 'findings',
          method: 'GET',
          path: `/v1/findings?${r.pick([
            'status=closed',
            'status=open,resolved',
            'status=',
            'kind=vm',
            'kind=server,,bogus',
            `kind=${pathSegment(r.pick(SQL_INJECTIONS))}`,
            'limit=0',
            'limit=101',
            `cursor=${Buffer.from('not-a-uuid').toString('base64url')}`,
            `cursor=${Buffer.from(r.uuid()).toString('base64url')}`,
            'status=open&kind=server,device&limit=5',
            'colour=red',
          ])}`,
          headers: r.pick([this.auth(), ['authorization', `Bearer ${this.ctx.readToken}`]]),
          readOnly: true,
        }),
      ],
    ])();
  }

  /** Well-formed requests the state refuses: stop/start of agents still provisioning, rollback of live jobs. */
  private refusedByState(): FuzzRequest {
    const r = this.rng;
    const path = r.bool()
      ? `/v1/agents/${this.realAgent()}/${r.pick(['stop', 'start', 'hibernate', 'wake'])}`
      : `/v1/provisioning-jobs/${r.pick(this.ctx.provisioningJobIds)}/rollback`;
    return { category: 'refused-by-state', method: 'POST', path, headers: this.auth(), readOnly: false };
  }
}

/** Malformed HTTP that only a raw socket can send; Node's parser answers these before the app. */
export function rawRequests(rng: Prng, count: number): RawRequest[] {
  const host = 'Host: 127.0.0.1\r\n';
  const fixed: [string, string][] = [
    ['garbage request line', 'HELLO\r\n\r\n'],
    ['no version', 'GET /v1/agents\r\n\r\n'],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['unknown version', 'GET /v1/agents HTTP/9.9\r\n' + host + '\r\n'],
    ['header without colon', 'GET /v1/agents HTTP/1.1\r\n' + host + 'NoColonHere\r\n\r\n'],
    ['space before colon', 'GET /v1/agents HTTP/1.1\r\n' + host + 'Authorization : Bearer x\r\n\r\n'],
    ['two content-lengths', 'POST /v1/agents HTTP/1.1\r\n' + host + 'Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}'],
    ['content-length and chunked', 'POST /v1/agents HTTP/1.1\r\n' + host + 'Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['bad chunk size', 'POST /v1/agents HTTP/1.1\r\n' + host + 'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    ['negative content-length', 'POST /v1/agents HTTP/1.1\r\n' + host + 'Content-Length: -1\r\n\r\n'],
    ['obs-fold', 'GET /v1/agents HTTP/1.1\r\n' + host + 'Authorization: Bearer\r\n x\r\n\r\n'],
    ['NUL in header', 'GET /v1/agents HTTP/1.1\r\n' + host + 'X-A: a\u0000b\r\n\r\n'],
    ['space in target', 'GET /v1/agents/a b HTTP/1.1\r\n' + host + '\r\n'],
    ['oversized headers', 'GET /v1/agents HTTP/1.1\r\n' + host + `X-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
    ['bare LF line endings', 'GET /v1/agents HTTP/1.1\n' + 'Host: x\n\n'],
    ['unknown transfer-encoding', 'POST /v1/agents HTTP/1.1\r\n' + host + 'Transfer-Encoding: bogus\r\n\r\n'],
  ];
  const out: RawRequest[] = fixed.map(([label, text]) => ({ category: 'raw-http', label, bytes: Buffer.from(text, 'latin1') }));
  while (out.length < count) {
    const bytes = Buffer.alloc(rng.int(1, 200));
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(0, 255);
    out.push({ category: 'raw-http', label: `random bytes (${bytes.length})`, bytes: Buffer.concat([bytes, Buffer.from('\r\n\r\n')]) });
  }
  return out;
}
