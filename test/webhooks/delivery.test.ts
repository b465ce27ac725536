import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import pino from 'pino';
import type { WebhookAttempt } from '../../src/entities';
import { createWorkerConnection, webhookJobOptions, type WebhookJobData } from '../../src/queues/queues';
import type { WorkerSettings } from '../../src/workers';
import { isPrivateAddress, type Lookup } from '../../src/webhooks/address-guard';
import { WebhookRelay } from '../../src/webhooks/delivery-relay';
import { createWebhookProcessor, createWebhookWorker } from '../../src/webhooks/delivery.processor';
import { WebhookSecretBox } from '../../src/webhooks/secret-box';
import { newWebhookSecret } from '../../src/webhooks/signing';
import { STALLED_ATTEMPT, WebhookRepository } from '../../src/webhooks/webhook.repository';
import { createTestDatabase, truncateAll, type TestDatabase } from '../helpers/db';
import { waitFor } from '../helpers/wait';
import { deleteRedisPrefix, REDIS_URL } from '../pipeline/stack';
import { startDnsServer, type TestDnsServer } from './dns-server';

// The delivery path against real sockets, a real DNS server (on 127.0.0.1, TTL 0, scripted answers),
// PostgreSQL and BullMQ. This machine has no public address, so 127.0.0.2 plays the receiver on the
// internet (the only address the guard lets through here) and 127.0.0.1, on the same port, the
// internal service a re-pointed name would aim at.

const PUBLIC = '127.0.0.2';
const INTERNAL = '127.0.0.1';
const refuses = (address: string) => address !== PUBLIC && isPrivateAddress(address);
const HOST = 'hooks.example.test';

interface Seen {
  path: string;
  host: string | undefined;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An HTTP server recording what it is sent; `respond` answers (or holds) each request. */
function receiver(address: string, port: number, respond: (path: string, res: import('node:http').ServerResponse) => void) {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ path: req.url ?? '', host: req.headers.host, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      respond(req.url ?? '', res);
    });
  });
  return {
    seen,
    server,
    listen: () => new Promise<number>((resolve) => server.listen(port, address, () => resolve((server.address() as AddressInfo).port))),
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function signatureOf(secret: string, headers: IncomingHttpHeaders, body: string): string {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  return 'v1,' + createHmac('sha256', key).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64');
}

describe('webhooks: delivery to the checked address only', function () {
  this.timeout(30_000);

  const logger = pino({ level: process.env.TEST_LOG ?? 'silent' });
  let db: TestDatabase;
  let connection: Redis;
  let prefix: string;
  let queue: Queue<WebhookJobData>;
  let webhooks: WebhookRepository;
  let dns: TestDnsServer;
  let port: number;
  let outside: ReturnType<typeof receiver>;
  let inside: ReturnType<typeof receiver>;
  const workers: Worker[] = [];

  before(async () => {
    db = await createTestDatabase('webhook_delivery');
    connection = createWorkerConnection(REDIS_URL);
    prefix = `tf-test-webhook-delivery-${randomBytes(4).toString('hex')}`;
    queue = new Queue<WebhookJobData>('webhooks', { connection, prefix });
    webhooks = new WebhookRepository({ dataSource: db.dataSource, secrets: new WebhookSecretBox({ primary: randomBytes(32), previous: [] }) });
    dns = await startDnsServer(() => [PUBLIC]);
    outside = receiver(PUBLIC, 0, (path, res) => {
      if (path === '/slow') return; // never answers
      if (path === '/redirect') {
        res.writeHead(307, { location: `http://${INTERNAL}:${port}/admin` });
        res.end();
        return;
      }
      if (path === '/refuse') {
        res.writeHead(500);
        res.end();
        return;
      }
      res.writeHead(204);
      res.end();
    });
    port = await outside.listen();
    inside = receiver(INTERNAL, port, (_path, res) => {
      res.writeHead(200);
      res.end('internal');
    });
    await inside.listen();
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.close(true)));
    await queue.obliterate({ force: true });
    await truncateAll(db.dataSource);
    dns.answer = () => [PUBLIC];
    dns.queries.length = 0;
    outside.seen.length = 0;
    inside.seen.length = 0;
  });

  after(async () => {
    await queue?.close();
    await connection?.quit();
    await deleteRedisPrefix(prefix);
    await outside?.close();
    await inside?.close();
    await dns?.close();
    await db?.drop();
  });

  function startWorker(opts: { timeoutMs?: number; settings?: Partial<WorkerSettings>; lookup?: Lookup } = {}): Worker {
    const worker = createWebhookWorker({
      connection,
      prefix,
      concurrency: 5,
      webhooks,
      logger,
      settings: opts.settings,
      processor: createWebhookProcessor({ webhooks, allowPrivateUrls: false, timeoutMs: opts.timeoutMs ?? 2000, logger, lookup: opts.lookup ?? dns.lookup, refuses }),
    });
    workers.push(worker);
    void worker.run();
    return worker;
  }

  /** The relay as worker processes run it, checking for lost and failed jobs on every pass. */
  function relay(attempts: number): WebhookRelay {
    return new WebhookRelay({ webhooks, queue, connection, jobOptions: webhookJobOptions({ attempts, backoffMs: 50 }), logger, lostCheckMs: 0 });
  }

  /** A subscription to `url` and one pending delivery for it, handed to the queue the way the relay does. */
  async function deliver(url: string, attempts = 1): Promise<{ id: string; secret: string }> {
    const secret = newWebhookSecret();
    const sub = await webhooks.create({ url, events: ['operation.failed'], secret, createdBy: 'test' });
    const [row] = (await db.dataSource.query(
      `INSERT INTO webhook_deliveries (subscription_id, event_id, type, data, occurred_at) VALUES ($1, 1, 'operation.failed', '{"operation":{}}', now()) RETURNING id`,
      [sub.id],
    )) as Array<{ id: string }>;
    expect(await relay(attempts).runOnce()).to.be.at.least(1);
    return { id: row!.id, secret };
  }

  async function settled(id: string, timeoutMs = 15_000) {
    return waitFor(
      `delivery ${id} to settle`,
      async () => {
        const d = await webhooks.findDelivery(id);
        return d && d.status !== 'pending' ? d : undefined;
      },
      { timeoutMs },
    );
  }

  const errors = (log: WebhookAttempt[]) => log.map((a) => a.error);

  it('connects to the address the check saw, not to what the name answers a moment later', async () => {
    // TTL 0: the first answer is the public receiver, every later one the internal service.
    dns.answer = (_q, nth) => (nth === 0 ? [PUBLIC] : [INTERNAL]);
    startWorker();
    const { id, secret } = await deliver(`http://${HOST}:${port}/hooks`);
    const d = await settled(id);

    expect(d.status, JSON.stringify(d.attemptLog)).to.equal('succeeded');
    expect(inside.seen).to.deep.equal([]);
    expect(outside.seen).to.have.length(1);
    // The name is kept for the Host header (and for TLS, where SNI and the certificate check use it).
    expect(outside.seen[0]!.host).to.equal(`${HOST}:${port}`);
    expect(outside.seen[0]!.headers['webhook-signature']).to.equal(signatureOf(secret, outside.seen[0]!.headers, outside.seen[0]!.body));
    // One resolution for the attempt: the check's answer is the one connected to.
    expect(dns.queries.filter((q) => q.name === HOST)).to.have.length(1);
  });

  it('speaks TLS to the checked address under the host name: SNI and the certificate check use the name', async () => {
    // A self-signed certificate for HOST (test/webhooks/fixtures): the handshake reaches the pinned
    // address with HOST as SNI, and the certificate is verified (and refused: no CA vouches for it).
    const names: string[] = [];
    const tls = createTlsServer({
      key: readFileSync(join(__dirname, 'fixtures', 'receiver.key.pem')),
      cert: readFileSync(join(__dirname, 'fixtures', 'receiver.cert.pem')),
      SNICallback: (name, cb) => {
        names.push(name);
        cb(null, undefined);
      },
    }, (_req, res) => res.end());
    await new Promise<void>((resolve) => tls.listen(0, PUBLIC, resolve));
    try {
      dns.answer = (_q, nth) => (nth === 0 ? [PUBLIC] : [INTERNAL]);
      startWorker();
      const { id } = await deliver(`https://${HOST}:${(tls.address() as AddressInfo).port}/hooks`);
      const d = await settled(id);
      expect(d.status).to.equal('failed');
      expect(d.attemptLog[0]!.error).to.equal('DEPTH_ZERO_SELF_SIGNED_CERT');
      expect(names).to.deep.equal([HOST]);
    } finally {
      tls.closeAllConnections();
      await new Promise<void>((resolve) => tls.close(() => resolve()));
    }
  });

  it('checks every address a name resolves to: one internal address refuses the delivery for good', async () => {
    dns.answer = () => [PUBLIC, INTERNAL];
    startWorker();
    const { id } = await deliver(`http://${HOST}:${port}/hooks`, 5);
    const d = await settled(id);
    expect(d.status).to.equal('failed');
    expect(d.attempts).to.equal(1);
    expect(d.attemptLog[0]!.error).to.match(/^receiver address refused: resolves to 127\.0\.0\.1/);
    expect(outside.seen).to.deep.equal([]);
    expect(inside.seen).to.deep.equal([]);
  });

  it('refuses IPv6 literals that carry a loopback IPv4 address (compatible, SIIT, 6to4, NAT64, Teredo)', async () => {
    startWorker();
    for (const host of ['[::127.0.0.1]', '[::ffff:0:7f00:1]', '[2002:7f00:1::]', '[64:ff9b::7f00:1]', '[2001:0:4136:e378:8000:63bf:80ff:fffe]']) {
      const { id } = await deliver(`http://${host}:${port}/hooks`, 3);
      const d = await settled(id);
      expect(d.status, host).to.equal('failed');
      expect(d.attempts, host).to.equal(1);
      expect(d.attemptLog[0]!.error, host).to.match(/^receiver address refused/);
    }
    expect(inside.seen).to.deep.equal([]);
  });

  it('does not follow a redirect: the 3xx is a failed attempt and its target is never called', async () => {
    startWorker();
    const { id } = await deliver(`http://${HOST}:${port}/redirect`, 2);
    const d = await settled(id);
    expect(d.status).to.equal('failed');
    expect(d.attemptLog.map((a) => a.status)).to.deep.equal([307, 307]);
    expect(errors(d.attemptLog)).to.deep.equal(Array(2).fill('the receiver answered 307 (redirects are not followed)'));
    expect(outside.seen.map((s) => s.path)).to.deep.equal(['/redirect', '/redirect']);
    expect(inside.seen).to.deep.equal([]);
  });

  it('gives up on a receiver that does not answer within the timeout, and retries it', async () => {
    startWorker({ timeoutMs: 300 });
    const { id } = await deliver(`http://${HOST}:${port}/slow`, 2);
    const d = await settled(id);
    expect(d.status).to.equal('failed');
    expect(errors(d.attemptLog)).to.deep.equal(['no answer within 300 ms', 'no answer within 300 ms']);
    expect(d.attemptLog.every((a) => a.status === null && a.durationMs >= 290 && a.durationMs < 2000), JSON.stringify(d.attemptLog)).to.equal(true);
    expect(outside.seen).to.have.length(2);
  });

  it('retries a delivery whose name did not resolve for a while (SERVFAIL, a resolver timeout) and then delivers it', async () => {
    dns.answer = (_q, nth) => (nth === 0 ? { rcode: 'SERVFAIL' } : nth === 1 ? 'silence' : [PUBLIC]);
    startWorker();
    const { id } = await deliver(`http://${HOST}:${port}/hooks`, 5);
    const d = await settled(id);
    expect(d.status, JSON.stringify(d.attemptLog)).to.equal('succeeded');
    expect(errors(d.attemptLog)).to.deep.equal([
      `the host ${HOST} does not resolve (ESERVFAIL)`,
      `the host ${HOST} does not resolve (ETIMEOUT)`,
      null,
    ]);
    expect(outside.seen).to.have.length(1);
  });

  it('retries a delivery whose system resolver answered EAI_AGAIN', async () => {
    // getaddrinfo's "try again" comes from the system resolver, which this machine cannot be made to
    // answer; the DNS edge gives it once, then resolves through the test server.
    let calls = 0;
    const flaky: Lookup = (host) => {
      if (calls++ > 0) return dns.lookup(host);
      return Promise.reject(Object.assign(new Error(`getaddrinfo EAI_AGAIN ${host}`), { code: 'EAI_AGAIN' }));
    };
    startWorker({ lookup: flaky });
    const { id } = await deliver(`http://${HOST}:${port}/hooks`, 5);
    const d = await settled(id);
    expect(d.status, JSON.stringify(d.attemptLog)).to.equal('succeeded');
    expect(errors(d.attemptLog)).to.deep.equal([`the host ${HOST} does not resolve (EAI_AGAIN)`, null]);
  });

  it('marks a delivery failed once every attempt has failed, each one on its row', async () => {
    startWorker();
    const { id } = await deliver(`http://${HOST}:${port}/refuse`, 3);
    const d = await settled(id);
    expect(d.status).to.equal('failed');
    expect(d.attempts).to.equal(3);
    expect(d.attemptLog.map((a) => [a.status, a.error])).to.deep.equal(Array(3).fill([500, 'the receiver answered 500']));
    expect(outside.seen.map((s) => s.headers['webhook-id'])).to.deep.equal([id, id, id]);
    const job = await queue.getJob(id);
    expect(await job!.isFailed()).to.equal(true);
  });

  describe('a job BullMQ fails for stalling', () => {
    // Locks expire at once and the first stall fails the job: only the settling keeps the delivery alive.
    const stalls = { lockDurationMs: 1000, stalledIntervalMs: 300, maxStalledCount: 0 };

    /** A worker that takes the job and dies with it (its lock is no longer renewed). */
    async function dieHolding(deliveryId: string): Promise<void> {
      let took!: () => void;
      const taken = new Promise<void>((resolve) => (took = resolve));
      const doomed = new Worker<WebhookJobData>('webhooks', () => {
        took();
        return new Promise(() => undefined);
      }, { connection, prefix, autorun: false, lockDuration: stalls.lockDurationMs, stalledInterval: stalls.stalledIntervalMs });
      void doomed.run();
      await taken;
      expect((await queue.getJob(deliveryId))!.id).to.equal(deliveryId);
      await doomed.close(true);
    }

    it('is delivered again by the next worker, not left pending', async () => {
      const { id } = await deliver(`http://${HOST}:${port}/hooks`, 3);
      await dieHolding(id);
      startWorker({ settings: stalls });
      const d = await settled(id);
      expect(d.status, JSON.stringify(d.attemptLog)).to.equal('succeeded');
      expect(d.attemptLog[0]!.error).to.match(new RegExp(`^${STALLED_ATTEMPT}: .*stalled`));
      expect(d.attemptLog.at(-1)!.error).to.equal(null);
      expect(outside.seen).to.have.length(1);
    });

    it('is marked failed once it has stalled too often', async () => {
      const { id } = await deliver(`http://${HOST}:${port}/hooks`, 3);
      const earlier = Array.from({ length: 5 }, () => ({ at: new Date().toISOString(), status: null, durationMs: 0, error: `${STALLED_ATTEMPT}: job stalled more than allowable limit` }));
      await db.dataSource.query(`UPDATE webhook_deliveries SET attempt_log = $2::jsonb WHERE id = $1`, [id, JSON.stringify(earlier)]);
      await dieHolding(id);
      startWorker({ settings: stalls });
      const d = await settled(id);
      expect(d.status).to.equal('failed');
      expect(d.attemptLog).to.have.length(5);
      expect(outside.seen).to.deep.equal([]);
    });
  });

  it('the relay settles a pending delivery whose job failed without its worker settling it', async () => {
    // A job failed in the queue by something other than the delivery worker (by hand, or a worker that died before settling).
    const bare = new Worker<WebhookJobData>('webhooks', (job: Job) => {
      throw job.data.type === 'operation.failed' ? new UnrecoverableError('failed by hand') : new Error('unexpected');
    }, { connection, prefix, autorun: false });
    workers.push(bare);
    const { id } = await deliver(`http://${HOST}:${port}/hooks`, 3);
    void bare.run();
    await waitFor('the job to fail', async () => (await queue.getJob(id))?.isFailed());
    expect((await webhooks.findDelivery(id))!.status).to.equal('pending');
    await relay(3).runOnce();
    const d = await webhooks.findDelivery(id);
    expect(d!.status).to.equal('failed');
    expect(outside.seen).to.deep.equal([]);
  });
});
