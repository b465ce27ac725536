import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ConfigError } from '../../src/config';
import { createSuite, type Suite } from '../pipeline/stack';

// /metrics and /readyz of processes built by the composition root from their environment, as in
// production: METRICS_TOKEN, METRICS_PORT/METRICS_HOST, and what /readyz tells whom.

const METRICS_TOKEN = 'metrics-secret-0123456789';

async function get(url: string, token?: string) {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type') ?? '', auth: res.headers.get('www-authenticate'), text };
}

describe('probes: /metrics and /readyz', function () {
  this.timeout(60_000);
  let suite: Suite;

  before(async () => {
    suite = await createSuite('probes');
  });

  after(async () => {
    await suite?.close();
  });

  it('/metrics is open by default', async () => {
    const tf = await suite.launch({ env: { ROLE: 'api' } });
    const res = await get(`${tf.url}/metrics`);
    expect(res.status).to.equal(200);
    expect(res.text).to.contain('tailfleet_http_requests_total');
  });

  it('with METRICS_TOKEN, /metrics answers only a Bearer carrying it (API and worker roles)', async () => {
    for (const role of ['api', 'worker']) {
      const tf = await suite.launch({ env: { ROLE: role, METRICS_TOKEN } });
      for (const token of [undefined, 'wrong', suite.apiToken]) {
        const refused = await get(`${tf.url}/metrics`, token);
        expect(refused.status, `${role} ${token}`).to.equal(401);
        expect(refused.type).to.match(/^application\/problem\+json/);
        expect(refused.auth).to.match(/^Bearer realm="tailfleet-metrics"/);
        expect(refused.text).not.to.contain('tailfleet_');
      }
      const ok = await get(`${tf.url}/metrics`, METRICS_TOKEN);
      expect(ok.status, role).to.equal(200);
      expect(ok.text).to.contain('process_cpu_user_seconds_total');
      await tf.stop();
    }
  });

  it('METRICS_TOKEN_FILE gives the token from a file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tailfleet-metrics-'));
    try {
      writeFileSync(join(dir, 'token'), `${METRICS_TOKEN}\n`);
      expect(suite.config({ METRICS_TOKEN_FILE: join(dir, 'token') }).metrics.token).to.equal(METRICS_TOKEN);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('with METRICS_PORT, /metrics moves to a listener of its own on METRICS_HOST', async () => {
    const tf = await suite.launch({ env: { ROLE: 'api', METRICS_PORT: '0', METRICS_HOST: '127.0.0.1', METRICS_TOKEN } });
    expect(tf.metricsUrl).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(tf.metricsUrl).not.to.equal(tf.url);
    const onApi = await get(`${tf.url}/metrics`, METRICS_TOKEN);
    expect(onApi.status).to.equal(404);
    expect((await get(`${tf.metricsUrl}/metrics`)).status).to.equal(401);
    const ok = await get(`${tf.metricsUrl}/metrics`, METRICS_TOKEN);
    expect(ok.status).to.equal(200);
    expect(ok.text).to.contain('tailfleet_http_requests_total');
    const elsewhere = await get(`${tf.metricsUrl}/v1/agents`, suite.apiToken);
    expect(elsewhere.status).to.equal(404);
    expect(elsewhere.type).to.match(/^application\/problem\+json/);
    expect((await get(`${tf.url}/healthz`)).status).to.equal(200);
    await tf.stop();
  });

  it('refuses METRICS_HOST without METRICS_PORT and a short METRICS_TOKEN', () => {
    const err = (() => {
      try {
        suite.config({ METRICS_HOST: '127.0.0.1', METRICS_TOKEN: 'short' });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).to.be.instanceOf(ConfigError);
    expect((err as ConfigError).problems.join('\n')).to.match(/METRICS_TOKEN: must be at least 16/).and.match(/METRICS_HOST: set METRICS_PORT/);
  });

  it('/readyz tells anonymous callers only whether it is ready and what is down; an admin token the details', async () => {
    const tf = await suite.launch({ env: { ROLE: 'all', RECONCILE_INTERVAL_SECONDS: '0' } });
    const anonymous = await get(`${tf.url}/readyz`);
    expect(anonymous.status).to.equal(200);
    expect(JSON.parse(anonymous.text)).to.deep.equal({ status: 'ready' });
    const admin = JSON.parse((await get(`${tf.url}/readyz`, suite.apiToken)).text);
    expect(admin).to.deep.equal({ status: 'ready', postgres: true, redis: true, credentials: { hetzner: 'unknown', tailscale: 'unknown' } });

    // A refused credential: the operator sees the setting, everyone else only the dependency.
    tf.cloudHealth!.onRequest({ api: 'hetzner', method: 'GET', route: '/servers', status: 401, durationMs: 1 });
    const down = await get(`${tf.url}/readyz`);
    expect(down.status).to.equal(503);
    expect(JSON.parse(down.text)).to.deep.equal({ status: 'unavailable', down: ['hetzner'] });
    expect(down.text).not.to.match(/HETZNER|TOKEN|http|127\.0\.0\.1/);
    const read = await fetch(`${tf.url}/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${suite.apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'probe-reader', scope: 'read' }),
    }).then((r) => r.json() as Promise<{ token: string }>);
    expect(JSON.parse((await get(`${tf.url}/readyz`, read.token)).text)).to.deep.equal({ status: 'unavailable', down: ['hetzner'] });
    const details = JSON.parse((await get(`${tf.url}/readyz`, suite.apiToken)).text);
    expect(details.problems).to.deep.equal(['hetzner rejected the credentials (401): check HETZNER_API_TOKEN']);
    await tf.stop();
  });
});
