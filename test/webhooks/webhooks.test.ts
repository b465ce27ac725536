import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import type { Tailfleet } from '../../src/server';
import { isPrivateAddress } from '../../src/webhooks/address-guard';
import { signWebhook } from '../../src/webhooks/signing';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';

// Signed webhooks end to end: a receiver on a real HTTP port refuses the first two deliveries and
// then accepts; it checks every signature with its own few lines of node:crypto (the Standard
// Webhooks rule, written out again here rather than imported from src/).

/** The receiver's verifier: v1,base64(HMAC-SHA256(base64-decoded secret after whsec_, "id.timestamp.body")). */
function verify(secret: string, headers: IncomingHttpHeaders, body: string): boolean {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (typeof id !== 'string' || typeof timestamp !== 'string' || typeof signatures !== 'string') return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = Buffer.from(createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64'));
  return signatures.split(' ').some((s) => {
    const [version, sig] = s.split(',');
    const given = Buffer.from(sig ?? '');
    return version === 'v1' && given.length === expected.length && timingSafeEqual(given, expected);
  });
}

interface Received {
  id: string;
  valid: boolean;
  answered: number;
  body: { type: string; timestamp: string; data: any };
}

describe('webhooks: signed deliveries through the outbox and the webhooks queue', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let receiver: Server;
  let receiverUrl: string;
  let secret = '';
  const received: Received[] = [];

  before(async () => {
    suite = await createSuite('webhooks');
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        // The first two deliveries are refused; everything after is accepted.
        const answered = received.length < 2 ? 500 : 204;
        received.push({ id: String(req.headers['webhook-id']), valid: verify(secret, req.headers, body), answered, body: JSON.parse(body) });
        res.statusCode = answered;
        res.end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/tailfleet`;
    tf = await suite.launch({
      env: {
        WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
        WEBHOOK_BACKOFF_MS: '100',
        WEBHOOK_ATTEMPTS: '5',
        RELAY_INTERVAL_MS: '200',
        WEBHOOK_SECRET_KEY: randomBytes(32).toString('base64'),
      },
    });
    api = apiClient(tf.url!, suite.apiToken);
  });

  after(async () => {
    await suite?.close();
    await new Promise<void>((resolve) => receiver?.close(() => resolve()));
  });

  it('creates a subscription whose secret is shown once', async () => {
    const created = await api.post('/v1/webhooks', { url: receiverUrl });
    expect(created.status).to.equal(201);
    expect(created.body).to.include({ url: receiverUrl });
    expect(created.body.events).to.have.members(['operation.succeeded', 'operation.failed', 'operation.cancelled', 'agent.status_changed', 'agent.expiring', 'finding.resolved']);
    expect(created.body.secret).to.match(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(created.body.secret.slice('whsec_'.length), 'base64').length).to.be.at.least(24);
    secret = created.body.secret;

    const list = await api.get('/v1/webhooks');
    expect(list.status).to.equal(200);
    expect(list.body.items.map((w: any) => w.id)).to.deep.equal([created.body.id]);
    const one = await api.get(`/v1/webhooks/${created.body.id}`);
    expect(one.status).to.equal(200);
    expect(JSON.stringify([list.body, one.body])).not.to.include(secret.slice(6));
    // At rest it is sealed (enc:v1:<key id>:…), nothing of it in clear.
    const [stored] = await suite.db.dataSource.query(`SELECT secret FROM webhook_subscriptions WHERE id = $1`, [created.body.id]);
    expect(stored.secret).to.match(/^enc:v1:[0-9a-f]{12}:/);
    expect(stored.secret).to.not.include(secret.slice(6, 20));
  });

  it('delivers every event with a valid signature, retrying refused deliveries under the same webhook-id', async () => {
    const created = await api.post('/v1/agents', { name: 'hooked' });
    expect(created.status).to.equal(201);
    const agentId = created.body.agent.id as string;
    const operationId = created.body.operation.id as string;
    await waitFor('the provision to succeed', async () => (await api.get(`/v1/operations/${operationId}`)).body.operation.status === 'succeeded');

    const deliveryRows = async () =>
      (await suite.db.dataSource.query(`SELECT id, type, status, event_id::text AS event_id FROM webhook_deliveries ORDER BY event_id`)) as Array<{
        id: string;
        type: string;
        status: string;
        event_id: string;
      }>;
    // One delivery per matching event, written with the event itself.
    const agentEvents: Array<{ id: string }> = await suite.db.dataSource.query(
      `SELECT id::text AS id FROM events WHERE entity_type = 'agent' AND agent_id = $1`,
      [agentId],
    );
    const rows = await waitFor('every delivery to succeed', async () => {
      const r = await deliveryRows();
      return r.length === agentEvents.length + 1 && r.every((d) => d.status === 'succeeded') ? r : undefined;
    }, { timeoutMs: 20_000 });

    // The receiver saw each delivery, every request was signed correctly, and the two refused ones came back.
    expect(received.every((r) => r.valid), JSON.stringify(received.map((r) => [r.id, r.valid]))).to.equal(true);
    const refused = received.filter((r) => r.answered === 500);
    expect(refused).to.have.length(2);
    const accepted = received.filter((r) => r.answered === 204);
    expect(accepted.map((r) => r.id).sort()).to.deep.equal(rows.map((d) => d.id).sort());
    for (const r of refused) expect(accepted.map((a) => a.id)).to.include(r.id);
    // A retry carries the same body as the first try.
    for (const r of refused) expect(accepted.find((a) => a.id === r.id)!.body).to.deep.equal(r.body);

    const types = accepted.map((r) => r.body.type);
    expect(types.filter((t) => t === 'operation.succeeded')).to.have.length(1);
    const done = accepted.find((r) => r.body.type === 'operation.succeeded')!.body;
    expect(done.data.operation).to.include({ id: operationId, type: 'provision', status: 'succeeded', agentId });
    expect(Number.isNaN(Date.parse(done.timestamp))).to.equal(false);
    const statuses = accepted.filter((r) => r.body.type === 'agent.status_changed').map((r) => r.body.data.to);
    expect(statuses).to.include.members(['provisioning', 'active']);
    expect(accepted.find((r) => r.body.data.to === 'active')!.body.data.agent).to.include({ id: agentId, name: 'hooked', status: 'active' });

    // The deliveries, with their attempts, through the API; each was a job of the webhooks queue.
    const subscriptionId = (await api.get('/v1/webhooks')).body.items[0].id as string;
    const deliveries = await api.get(`/v1/webhooks/${subscriptionId}/deliveries?limit=100`);
    expect(deliveries.status).to.equal(200);
    expect(deliveries.body.items).to.have.length(rows.length);
    const retried = deliveries.body.items.filter((d: any) => d.attempts > 1);
    expect(retried.map((d: any) => d.id).sort()).to.deep.equal([...new Set(refused.map((r) => r.id))].sort());
    for (const d of retried) {
      expect(d.attemptLog[0]).to.include({ status: 500, error: 'the receiver answered 500' });
      expect(d.attemptLog.at(-1)).to.include({ status: 204, error: null });
      expect(d.deliveredAt).to.be.a('string');
    }
    for (const d of rows) expect(await tf.queues.webhooks.getJob(d.id), d.id).to.not.equal(undefined);
  });

  it('delivers finding.resolved, signed, when an admin resolves an ownership finding', async () => {
    const finding = await new OwnershipFindingRepository({ dataSource: suite.db.dataSource }).recordRefusal(
      { resourceType: 'device', resourceId: 'dev-hooked', resourceName: 'stray-device', action: 'delete', operation: 'reconcile', matched: ['tags'], missing: ['hostname of this fleet'] },
      'refused: not provably ours',
    );
    const res = await api.post(`/v1/findings/${finding.id}/resolve`, { note: 'removed from the tailnet by hand' });
    expect(res.status).to.equal(200);
    const got = await waitFor('the finding.resolved delivery', async () =>
      received.find((r) => r.body.type === 'finding.resolved' && r.answered === 204 && r.body.data.finding?.id === finding.id),
    );
    expect(got.valid).to.equal(true);
    expect(got.body.data).to.deep.include({ from: 'open', to: 'resolved', actor: 'bootstrap', reason: 'delete of device dev-hooked resolved: removed from the tailnet by hand' });
    expect(got.body.data.finding).to.include({ resourceType: 'device', resourceId: 'dev-hooked', resolution: 'removed from the tailnet by hand', resolvedBy: 'bootstrap' });
  });

  it('deletes a subscription with its deliveries; later events are not sent to it', async () => {
    const subscriptionId = (await api.get('/v1/webhooks')).body.items[0].id as string;
    expect((await api.call('DELETE', `/v1/webhooks/${subscriptionId}`)).status).to.equal(204);
    expect((await api.get(`/v1/webhooks/${subscriptionId}`)).status).to.equal(404);
    expect((await api.get(`/v1/webhooks/${subscriptionId}/deliveries`)).status).to.equal(404);
    expect((await api.call('DELETE', `/v1/webhooks/${subscriptionId}`)).status).to.equal(404);
    const before = received.length;
    const created = await api.post('/v1/agents', { name: 'unhooked' });
    await waitFor('the provision to succeed', async () => (await api.get(`/v1/operations/${created.body.operation.id}`)).body.operation.status === 'succeeded');
    expect(await suite.db.dataSource.query(`SELECT count(*)::int AS n FROM webhook_deliveries`)).to.deep.equal([{ n: 0 }]);
    expect(received.length).to.equal(before);
  });

  it('refuses receivers on loopback, private and link-local addresses unless allowed', async () => {
    const strict = await suite.launch({ env: { ROLE: 'api' } });
    const strictApi = apiClient(strict.url!, suite.apiToken);
    for (const url of [
      receiverUrl,
      'http://localhost:8080/hook',
      'http://10.1.2.3/hook',
      'http://192.168.0.10/hook',
      'http://100.100.1.1/hook',
      'http://169.254.169.254/latest/meta-data',
      'http://[::1]:9000/hook',
      'http://[::ffff:127.0.0.1]/hook',
      'http://[::127.0.0.1]/hook',
      'http://[::ffff:0:7f00:1]/hook',
      'http://[2002:7f00:1::]/hook',
      'http://[2002:a9fe:a9fe::1]/latest/meta-data',
      'http://[64:ff9b::a00:1]/hook',
      'http://[64:ff9b:1::808:808]/hook',
      'http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook',
      'http://[fd7a:115c:a1e0::1]/hook',
      'http://[fe80::1]/hook',
      'ftp://example.com/hook',
      'http://user:pass@93.184.215.14/hook',
      'not a url',
    ]) {
      const res = await strictApi.post('/v1/webhooks', { url });
      expect(res.status, url).to.equal(400);
      expect(res.body.errors[0].path, url).to.equal('body.url');
    }
    expect((await strictApi.post('/v1/webhooks', { url: 'http://93.184.215.14/hook', events: ['agent.exploded'] })).status).to.equal(400);
    expect((await strictApi.get('/v1/webhooks')).body.items).to.deep.equal([]);
    // A public address literal needs no DNS and is accepted.
    const ok = await strictApi.post('/v1/webhooks', { url: 'https://93.184.215.14/hook', events: ['operation.failed'] });
    expect(ok.status).to.equal(201);
    expect(ok.body.events).to.deep.equal(['operation.failed']);
    expect((await strictApi.call('DELETE', `/v1/webhooks/${ok.body.id}`)).status).to.equal(204);
  });

  it('signs as the Standard Webhooks specification does (its published test vector)', () => {
    const vector = { secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', id: 'msg_p5jXN8AQM9LWM0D4loKWxJek', timestamp: 1614265330, body: '{"test": 2432232314}' };
    expect(signWebhook(vector.secret, vector.id, vector.timestamp, vector.body)).to.equal('v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  it('judges addresses as the delivery does: IPv6 forms that carry an IPv4 address like that address', () => {
    for (const a of [
      '127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.1.1', '100.64.0.1', '0.0.0.0', '255.255.255.255', '198.18.0.1',
      '::1', '::', 'fd00::1', 'fe80::1', 'fe80::1%eth0', 'ff02::1', 'fec0::1', '100::1', '2001:db8::1', '3fff::1', '5f00::1',
      // IPv4-mapped, IPv4-compatible and SIIT (dotted and hex)
      '::ffff:10.0.0.1', '::ffff:7f00:1', '::127.0.0.1', '::7f00:1', '::ffff:0:127.0.0.1', '::ffff:0:7f00:1', '0:0:0:0:0:ffff:a9fe:a9fe',
      // NAT64: the well-known prefix carrying a private address; the local-use prefix always
      '64:ff9b::7f00:1', '64:ff9b::10.1.2.3', '64:ff9b:1::808:808',
      // 6to4 carrying loopback, private and link-local networks
      '2002:7f00:1::', '2002:a00:1::1', '2002:a9fe:a9fe::',
      // Teredo: the client is the last 32 bits inverted (here 127.0.0.1 and 10.0.0.1), or a private server
      '2001:0:4136:e378:8000:63bf:80ff:fffe', '2001:0:4136:e378::f5ff:fffe', '2001:0:a00:1::fefe:fefe',
      'not-an-address',
    ]) {
      expect(isPrivateAddress(a), a).to.equal(true);
    }
    for (const a of [
      '93.184.215.14', '1.1.1.1', '2606:4700:4700::1111', '2a01:4f8::1',
      '::ffff:1.1.1.1', '::ffff:0:101:101', '64:ff9b::1.1.1.1', '2002:101:101::1', '2001:0:4136:e378::fefe:fefe',
    ]) {
      expect(isPrivateAddress(a), a).to.equal(false);
    }
  });
});
