import { expect } from 'chai';
import { CloudCredentialHealth } from '../../src/clients/observers';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type Suite } from './stack';

// A credential the cloud refuses is a configuration error: retrying cannot fix it, so the job fails
// at its first attempt with a message naming the setting, and /readyz says what is wrong.

describe('pipeline: rejected cloud credentials', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet | undefined;

  const op = async (id: string) =>
    ((await suite.db.dataSource.query(`SELECT status, attempts, error FROM operations WHERE id = $1`, [id])) as any[])[0];

  before(async () => {
    suite = await createSuite('pipeline_credentials');
  });
  afterEach(async () => {
    await tf?.stop();
    tf = undefined;
  });
  after(async () => {
    await suite?.close();
  });

  async function provisionWith(env: Record<string, string>, name: string) {
    // Five attempts allowed and no reconcile pass: only the provision job talks to the cloud.
    tf = await suite.launch({ env: { ...env, JOB_ATTEMPTS: '5', RECONCILE_INTERVAL_SECONDS: '0' } });
    const api = apiClient(tf.url!, suite.apiToken);
    const readyBefore = await api.get('/readyz');
    expect(readyBefore.status).to.equal(200);
    expect(readyBefore.body.credentials).to.deep.equal({ hetzner: 'unknown', tailscale: 'unknown' });

    const created = await api.post('/v1/agents', { name });
    expect(created.status).to.equal(201);
    const id = created.body.operation.id as string;
    const failed = await waitFor('the provision to fail', async () => {
      const o = await op(id);
      return o.status === 'failed' ? o : undefined;
    });
    // The job is read after its state is failed: a copy read before it (then asked isFailed) would
    // carry the attempt count from before BullMQ's move to failed counted the attempt.
    const job = await waitFor('the job to fail in the queue', async () =>
      (await tf!.queues.provision.getJobState(`op-${id}`)) === 'failed' ? tf!.queues.provision.getJob(`op-${id}`) : undefined,
    );
    return { api, failed, job };
  }

  it('a wrong Hetzner token fails the provision at its first attempt, naming HETZNER_API_TOKEN; /readyz reports it', async () => {
    const { api, failed, job } = await provisionWith({ HETZNER_API_TOKEN: 'not-the-simulator-token' }, 'wrong-hetzner');
    expect(failed.attempts).to.equal(1);
    expect(job.attemptsMade).to.equal(1);
    expect(failed.error).to.include('Hetzner API rejected the token (401 unauthorized): check HETZNER_API_TOKEN');
    expect(failed.error).not.to.include('not-the-simulator-token');

    const ready = await api.get('/readyz');
    expect(ready.status).to.equal(503);
    expect(ready.body).to.deep.include({ status: 'unavailable', postgres: true, redis: true });
    expect(ready.body.credentials.hetzner).to.equal('unauthorized');
    expect(ready.body.problems).to.deep.equal(['hetzner rejected the credentials (401): check HETZNER_API_TOKEN']);
    // Liveness is unaffected: a restart would not fix the token.
    expect((await api.get('/healthz')).status).to.equal(200);
  });

  it('a wrong Tailscale OAuth secret fails the provision at once, naming the client settings; /readyz reports it', async () => {
    const { api, failed, job } = await provisionWith({ TAILSCALE_OAUTH_CLIENT_SECRET: 'not-the-simulator-secret' }, 'wrong-tailscale');
    expect(failed.attempts).to.equal(1);
    expect(job.attemptsMade).to.equal(1);
    expect(failed.error).to.include(
      'Tailscale rejected the OAuth client credentials (401 unauthorized): check TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET',
    );

    const ready = await api.get('/readyz');
    expect(ready.status).to.equal(503);
    expect(ready.body.credentials.tailscale).to.equal('unauthorized');
    expect(ready.body.problems).to.deep.equal([
      'tailscale rejected the credentials (401): check TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET',
    ]);
  });

  it('with the right credentials the clouds are marked ok and the process is ready', async () => {
    tf = await suite.launch({ env: { RECONCILE_INTERVAL_SECONDS: '0' } });
    const api = apiClient(tf.url!, suite.apiToken);
    const created = await api.post('/v1/agents', { name: 'right-credentials' });
    await waitFor('the provision to succeed', async () => (await op(created.body.operation.id)).status === 'succeeded');
    const ready = await api.get('/readyz');
    expect(ready.status).to.equal(200);
    expect(ready.body.credentials).to.deep.equal({ hetzner: 'ok', tailscale: 'ok' });
    expect(ready.body).not.to.have.property('problems');
  });
});

describe('CloudCredentialHealth', () => {
  const event = (api: 'hetzner' | 'tailscale', route: string, status: number | 'network') => ({
    api,
    method: 'GET',
    route,
    status,
    durationMs: 1,
  });

  it('marks an API unauthorized on a 401 and clears it on the next success', () => {
    const h = new CloudCredentialHealth();
    h.onRequest(event('hetzner', '/servers', 401));
    expect(h.snapshot()).to.deep.equal({ hetzner: 'unauthorized', tailscale: 'unknown' });
    h.onRequest(event('hetzner', '/servers', 'network'));
    h.onRequest(event('hetzner', '/servers', 503));
    expect(h.snapshot().hetzner).to.equal('unauthorized');
    h.onRequest(event('hetzner', '/servers/{id}', 200));
    expect(h.snapshot().hetzner).to.equal('ok');
    expect(h.problems()).to.deep.equal([]);
  });

  it('judges Tailscale by its token endpoint only: an expired access token is not a configuration error', () => {
    const h = new CloudCredentialHealth();
    h.onRequest(event('tailscale', '/tailnet/{tailnet}/devices', 401));
    expect(h.snapshot().tailscale).to.equal('unknown');
    h.onRequest(event('tailscale', '/oauth/token', 401));
    expect(h.snapshot().tailscale).to.equal('unauthorized');
    h.onRequest(event('tailscale', '/tailnet/{tailnet}/devices', 200));
    expect(h.snapshot().tailscale).to.equal('unauthorized');
    h.onRequest(event('tailscale', '/oauth/token', 200));
    expect(h.snapshot().tailscale).to.equal('ok');
  });
});
