import http from 'node:http';
import net from 'node:net';
import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import { QUEUE_NAMES } from '../../src/queues/queues';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, type Suite } from '../pipeline/stack';
import { RequestFactory, rawRequests, type FuzzContext, type FuzzRequest, type RawRequest } from './api.requests';
import { Prng, seedFrom } from './prng';

// Thousands of generated bad requests against the real app (real PostgreSQL, real BullMQ queues in
// Redis; no workers, so nothing moves unless a request moves it). No request may get a 5xx, every
// error is a JSON problem without internals, and afterwards the database and the queues are exactly
// as before. FUZZ_SEED=<n> replays a run; FUZZ_REQUESTS=<n> changes its size.

const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 2400);
const RAW_REQUESTS = 40;
const CONCURRENCY = 12;
const REQUEST_TIMEOUT_MS = 10_000;
const STACK_TRACE = /\n\s+at\s|\bat [^\s]+ \([^)]*:\d+:\d+\)|\.ts:\d+|\.js:\d+:\d+|\bTypeError\b|\bQueryFailedError\b/;

interface Outcome {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

function send(base: URL, agent: http.Agent, req: FuzzRequest): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const headers = [...req.headers];
    // A header array replaces Node's defaults, Host included, and HTTP/1.1 requires one.
    if (!headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host')) headers.push('host', base.host);
    if (req.body && !req.chunked) headers.push('content-length', String(req.body.length));
    // Without this Node sends a body-less POST as an empty chunked body.
    if (!req.body && !req.chunked && !['GET', 'HEAD'].includes(req.method)) headers.push('content-length', '0');
    const r = http.request(
      { host: base.hostname, port: base.port, method: req.method, path: req.path, headers, agent, timeout: REQUEST_TIMEOUT_MS },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    r.on('error', reject);
    if (req.body) r.end(req.body);
    else r.end();
  });
}

/** Writes raw bytes and reads the status line of whatever comes back (Node closes after a parse error). */
function sendRaw(base: URL, req: RawRequest): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: base.hostname, port: Number(base.port) });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error('no answer')), REQUEST_TIMEOUT_MS);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err) => {
      clearTimeout(timer);
      // A reset after the answer arrived is how Node ends a connection it cannot parse.
      if (chunks.length > 0) done();
      else reject(err);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      done();
    });
    let finished = false;
    function done() {
      if (finished) return;
      finished = true;
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, text });
    }
    socket.write(req.bytes, () => socket.end());
  });
}

function describeRequest(req: FuzzRequest): string {
  const body = req.body ? ` body(${req.body.length}B)=${JSON.stringify(req.body.subarray(0, 120).toString('latin1'))}` : '';
  const headers = req.headers.map((h, i) => (i % 2 === 0 ? h : `${JSON.stringify(h.slice(0, 80))}`)).join(' ');
  return `[${req.category}] ${req.method} ${req.path.slice(0, 160)} headers: ${headers}${body}${req.chunked ? ' (chunked)' : ''}`;
}

function hasKeyDeep(value: unknown, key: string): boolean {
  if (!value || typeof value !== 'object') return false;
  if (Object.prototype.hasOwnProperty.call(value, key)) return true;
  return Object.values(value as Record<string, unknown>).some((v) => hasKeyDeep(v, key));
}

/** Problems with one answer; empty when it is a proper answer to a bad request. */
function checkAnswer(req: FuzzRequest, res: Outcome): string[] {
  const problems: string[] = [];
  if (res.status >= 500) problems.push(`got ${res.status}`);
  if (res.status >= 200 && res.status < 300 && !req.readOnly) problems.push(`a request with a defect was accepted (${res.status})`);
  if (res.headers['x-powered-by']) problems.push('x-powered-by header sent');
  if (STACK_TRACE.test(res.text)) problems.push('answer contains what looks like a stack trace or source path');
  // The console answers a browser: its refusals are pages (text/html), or a 303 to sign-in.
  const consolePage = req.path.startsWith('/console/') && String(res.headers['content-type'] ?? '').startsWith('text/html');
  if (res.status >= 400 && req.method !== 'HEAD' && !consolePage) {
    const type = String(res.headers['content-type'] ?? '');
    if (!type.startsWith('application/problem+json')) problems.push(`error content-type is ${JSON.stringify(type)}`);
    let body: any;
    try {
      body = JSON.parse(res.text);
    } catch {
      problems.push('error body is not JSON');
    }
    if (body) {
      if (typeof body.type !== 'string' || !body.type.startsWith('urn:tailfleet:problem:')) problems.push(`problem type ${JSON.stringify(body.type)}`);
      if (body.status !== res.status) problems.push(`problem status ${body.status} != ${res.status}`);
      if (typeof body.title !== 'string' || typeof body.detail !== 'string') problems.push('problem without title/detail');
      if (hasKeyDeep(body, 'stack')) problems.push('problem has a stack');
    }
  }
  return problems;
}

async function snapshotDatabase(ds: DataSource): Promise<Record<string, string[]>> {
  const tables: { table_name: string }[] = await ds.query(
    `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`,
  );
  const out: Record<string, string[]> = {};
  for (const { table_name } of tables) {
    // A token's last use is bookkeeping of a request, not a change it made: left out.
    const rows: { r: string }[] = await ds.query(`SELECT (to_jsonb(t) - 'last_used_at')::text AS r FROM "${table_name}" t ORDER BY 1`);
    out[table_name] = rows.map((x) => x.r);
  }
  return out;
}

async function snapshotQueues(tf: Tailfleet): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const name of QUEUE_NAMES) {
    const queue = tf.queues[name];
    const jobs = await queue.getJobs(['active', 'waiting', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children']);
    out[name] = {
      counts: await queue.getJobCounts(),
      ids: jobs.map((j) => `${j.id}:${JSON.stringify(j.data)}`).sort(),
      paused: await queue.isPaused(),
    };
  }
  return out;
}

function diffSnapshots(before: Record<string, string[]>, after: Record<string, string[]>): string {
  const lines: string[] = [];
  for (const table of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const b = new Set(before[table] ?? []);
    const a = new Set(after[table] ?? []);
    for (const r of a) if (!b.has(r)) lines.push(`+ ${table}: ${r.slice(0, 300)}`);
    for (const r of b) if (!a.has(r)) lines.push(`- ${table}: ${r.slice(0, 300)}`);
  }
  return lines.slice(0, 20).join('\n');
}

describe('API fuzzing: bad requests change nothing and never get a 5xx', function () {
  this.timeout(120_000);

  const seed = seedFrom('FUZZ_SEED');
  let suite: Suite;
  let tf: Tailfleet;
  let base: URL;
  let ctx: FuzzContext;

  before(async () => {
    console.log(`      fuzz seed ${seed} (replay with FUZZ_SEED=${seed})`);
    suite = await createSuite('api_fuzz');
    // API only: no worker moves anything, so any change after the snapshot was made by a fuzz request.
    tf = await suite.launch({ env: { ROLE: 'api' } });
    base = new URL(tf.url!);
    const api = apiClient(tf.url!, suite.apiToken);
    ctx = { token: suite.apiToken, readToken: '', operateToken: '', tokenIds: [], tokenNames: [], agentIds: [], provisioningJobIds: [], operationIds: [], openFindingIds: [], resolvedFindingIds: [], consoleCookie: '', consoleCsrf: '' };
    for (const scope of ['read', 'operate'] as const) {
      const res = await api.post('/v1/tokens', { name: `fuzz-${scope}`, scope });
      expect(res.status).to.equal(201);
      ctx[`${scope}Token`] = res.body.token;
      ctx.tokenIds.push(res.body.id);
      ctx.tokenNames.push(res.body.name);
    }
    for (let i = 0; i < 3; i++) {
      const res = await api.post('/v1/agents', { name: `fuzz-target-${i}` });
      expect(res.status).to.equal(201);
      ctx.agentIds.push(res.body.agent.id);
      ctx.provisioningJobIds.push(res.body.provisioningJob.id);
      ctx.operationIds.push(res.body.operation.id);
    }
    const findings = new OwnershipFindingRepository({ dataSource: suite.db.dataSource });
    for (const [i, resourceType] of (['server', 'device', 'image'] as const).entries()) {
      const f = await findings.recordRefusal(
        { resourceType, resourceId: `fuzz-${i}`, resourceName: null, action: 'delete', operation: 'destroy', agentId: ctx.agentIds[i], matched: ['labels'], missing: ['recorded id'] },
        'refused for the fuzz run',
      );
      if (i === 2) await findings.resolve(f.id, 'resolved before the run');
      (i === 2 ? ctx.resolvedFindingIds : ctx.openFindingIds).push(f.id);
    }
    // A console session of the read token, and the CSRF token of its forms.
    const signIn = await fetch(`${tf.url}/console/sign-in`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: ctx.readToken }),
    });
    expect(signIn.status).to.equal(303);
    ctx.consoleCookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
    const page = await (await fetch(`${tf.url}/console/findings`, { headers: { cookie: ctx.consoleCookie } })).text();
    ctx.consoleCsrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
  });

  after(async () => {
    await suite?.close();
  });

  // Found by this fuzzer: both used to fall through to an opaque 500.
  it('answers an undecodable path parameter and an undecompressable body with a 400 problem', async () => {
    const agent = new http.Agent();
    const cases: FuzzRequest[] = [
      { category: 'regression', method: 'GET', path: '/v1/agents/%zz', headers: ['authorization', `Bearer ${ctx.token}`], readOnly: true },
      { category: 'regression', method: 'POST', path: '/v1/agents/%C0%AE/stop', headers: ['authorization', `Bearer ${ctx.token}`], readOnly: false },
      ...['gzip', 'deflate', 'br'].map((encoding) => ({
        category: 'regression',
        method: 'POST',
        path: '/v1/agents',
        headers: ['authorization', `Bearer ${ctx.token}`, 'content-type', 'application/json', 'content-encoding', encoding],
        body: Buffer.from('not compressed at all, definitely not'),
        readOnly: false,
      })),
    ];
    try {
      for (const req of cases) {
        const res = await send(base, agent, req);
        expect(res.status, describeRequest(req)).to.equal(400);
        expect(checkAnswer(req, res), describeRequest(req)).to.deep.equal([]);
      }
    } finally {
      agent.destroy();
    }
  });

  it(`answers ${REQUESTS} generated bad requests with 4xx problems and changes nothing`, async () => {
    const rng = new Prng(seed);
    const factory = new RequestFactory(rng, ctx);
    const requests = Array.from({ length: REQUESTS }, () => factory.next());
    const raw = rawRequests(rng, RAW_REQUESTS);

    const dbBefore = await snapshotDatabase(suite.db.dataSource);
    const queuesBefore = await snapshotQueues(tf);
    const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();

    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const failures: string[] = [];
    const byCategory = new Map<string, Map<number, number>>();
    const record = (category: string, status: number) => {
      const m = byCategory.get(category) ?? new Map<number, number>();
      m.set(status, (m.get(status) ?? 0) + 1);
      byCategory.set(category, m);
    };

    const started = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < requests.length) {
          const req = requests[next++]!;
          try {
            const res = await send(base, agent, req);
            record(req.category, res.status);
            if (process.env.FUZZ_TRACE === req.category) console.log(`${res.status} ${describeRequest(req)}`);
            const problems = checkAnswer(req, res);
            if (problems.length > 0) failures.push(`${problems.join('; ')}\n    ${describeRequest(req)}\n    → ${res.status} ${res.text.slice(0, 300)}`);
          } catch (err) {
            record(req.category, -1);
            failures.push(`no answer: ${(err as Error).message}\n    ${describeRequest(req)}`);
          }
        }
      }),
    );
    agent.destroy();
    for (const r of raw) {
      try {
        const res = await sendRaw(base, r);
        record(r.category, res.status);
        if (res.status >= 500 || res.status === 0) failures.push(`raw request "${r.label}" → ${res.status || 'no status line'}: ${JSON.stringify(res.text.slice(0, 120))}`);
        else if (!/content-type: application\/problem\+json/i.test(res.text) || !/"status":\s*4\d\d/.test(res.text))
          failures.push(`raw request "${r.label}" → ${res.status} without a problem document: ${JSON.stringify(res.text.slice(0, 200))}`);
      } catch (err) {
        record(r.category, -1);
        failures.push(`raw request "${r.label}": ${(err as Error).message}`);
      }
    }
    const elapsed = Date.now() - started;

    const summary = [...byCategory.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([c, m]) => `${c.padEnd(18)} ${[...m.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(' ')}`);
    console.log(`      ${requests.length + raw.length} requests in ${elapsed} ms (seed ${seed})\n        ${summary.join('\n        ')}`);

    expect(failures, `seed ${seed}: ${failures.length} bad answers, first ones:\n${failures.slice(0, Number(process.env.FUZZ_SHOW ?? 8)).join('\n')}`).to.deep.equal([]);

    // Still alive and still serving.
    const health = await apiClient(tf.url!, suite.apiToken).get('/healthz');
    expect(health.status).to.equal(200);

    const dbAfter = await snapshotDatabase(suite.db.dataSource);
    expect(dbAfter, `seed ${seed}: database changed:\n${diffSnapshots(dbBefore, dbAfter)}`).to.deep.equal(dbBefore);
    expect(await snapshotQueues(tf), `seed ${seed}: queues changed`).to.deep.equal(queuesBefore);

    // The app runs in this process: no body or query may have reached Object.prototype.
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).to.deep.equal(protoBefore);
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
    expect(({} as Record<string, unknown>).isAdmin).to.equal(undefined);
  });
});
