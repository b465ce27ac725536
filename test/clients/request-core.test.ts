import { expect } from 'chai';
import { CloudApiError, HetznerClient, HetznerClientDeps, isRetryable } from '../../src/clients';
import { startSimulator, type RunningSimulator, type SimTimingsInput } from '../../src/simulator';
import { captureLogger, recordingObserver } from './clients.helpers';

const TOKEN = 'hetzner-secret-token-123';
const FAST: SimTimingsInput = {
  actionDurationMs: 20,
  bootMs: 10,
  enrollDelayMs: 10,
  shutdownMs: 40,
  rateLimit: { limit: 100_000, refillPerSecond: 100_000 },
};

async function failure(p: Promise<unknown>): Promise<CloudApiError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected the call to fail').to.be.instanceOf(CloudApiError);
  return err as CloudApiError;
}

describe('cloud request core (through HetznerClient, against the simulator)', () => {
  let sim: RunningSimulator;

  before(async () => {
    sim = await startSimulator({ port: 0, timings: FAST, credentials: { hetznerTokens: [TOKEN] } });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(() => {
    sim.control.reset(FAST);
  });

  function client(extra: Partial<HetznerClientDeps> = {}): HetznerClient {
    return new HetznerClient({
      baseUrl: sim.hetznerUrl,
      token: TOKEN,
      actionPollIntervalMs: 15,
      serverPollIntervalMs: 15,
      retryBaseDelayMs: 5,
      retryMaxDelayMs: 20,
      requestTimeoutMs: 2000,
      ...extra,
    });
  }
  const count = (key: string) => sim.control.requestCounts()[key] ?? 0;
  const existing = () => sim.control.createServer({ name: 'existing', labels: { 'managed-by': 'tailfleet' }, status: 'running' }).id;

  it('retries a 503 on a read and returns the answer', async () => {
    const id = existing();
    sim.control.setFaults([{ method: 'GET', route: '/hetzner/v1/servers/{id}', status: 503, times: 1 }]);
    const observer = recordingObserver();

    const server = await client({ observer }).getServer(id);
    expect(server?.id).to.equal(id);
    expect(count('GET /hetzner/v1/servers/{id}')).to.equal(2);
    expect(observer.events.map((e) => e.status)).to.deep.equal([503, 200]);
    expect(observer.events[0].route).to.equal('/servers/{id}');
  });

  it('retries a dropped connection on a read', async () => {
    const id = existing();
    sim.control.setFaults([{ method: 'GET', route: '/hetzner/v1/servers/{id}', drop: true, times: 1 }]);
    const observer = recordingObserver();
    expect((await client({ observer }).getServer(id))?.id).to.equal(id);
    expect(observer.events.map((e) => e.status)).to.deep.equal(['network', 200]);
  });

  it('gives up after maxRetries with a typed, retryable error', async () => {
    const id = existing();
    sim.control.setFaults([{ method: 'GET', route: '/hetzner/v1/servers/{id}', status: 503 }]);
    const err = await failure(client({ maxRetries: 2 }).getServer(id));
    expect(err).to.include({ api: 'hetzner', status: 503, code: 'unavailable', retryable: true, method: 'GET' });
    expect(err.path).to.equal(`/servers/${id}`);
    expect(err.attempts).to.equal(3);
    expect(count('GET /hetzner/v1/servers/{id}')).to.equal(3);
    expect(isRetryable(err)).to.equal(true);
  });

  it('reports a rejected token clearly, once, without the token', async () => {
    const h = new HetznerClient({ baseUrl: sim.hetznerUrl, token: ' ', retryBaseDelayMs: 5 });
    const err = await failure(h.listServers());
    expect(err.message).to.equal('Hetzner API rejected the token (401 unauthorized): check HETZNER_API_TOKEN');
    expect(err).to.include({ status: 401, code: 'unauthorized', retryable: false });
    expect(count('GET /hetzner/v1/servers')).to.equal(1);
  });

  it('refuses a token the API does not know, naming the setting that holds it', async () => {
    const wrong = 'not-the-configured-token';
    const observer = recordingObserver();
    const h = new HetznerClient({ baseUrl: sim.hetznerUrl, token: wrong, retryBaseDelayMs: 5, observer });
    const err = await failure(h.getServer(1));
    expect(err.message).to.equal('Hetzner API rejected the token (401 unauthorized): check HETZNER_API_TOKEN');
    expect(err.message).not.to.contain(wrong);
    expect(err).to.include({ status: 401, code: 'unauthorized', retryable: false, attempts: 1 });
    expect(observer.events.map((e) => e.status)).to.deep.equal([401]);
  });

  it('never puts the token into an error, even when the API echoes it', async () => {
    sim.control.setFaults([{ route: '/hetzner/v1/servers', status: 403, code: 'forbidden', message: `token ${TOKEN} is read-only` }]);
    const err = await failure(client().listServers());
    expect(err.status).to.equal(403);
    expect(err.message).to.contain('[redacted]');
    expect(err.message).not.to.contain(TOKEN);
    expect(JSON.stringify(err)).not.to.contain(TOKEN);
    expect(count('GET /hetzner/v1/servers')).to.equal(1);
  });

  it('does not retry invalid input (422) or a name conflict (409 uniqueness_error)', async () => {
    const h = client();
    const invalid = await failure(
      h.createServer({ name: 'not a hostname!', serverType: 'cx22', image: 'ubuntu-24.04', labels: {} }),
    );
    expect(invalid).to.include({ status: 422, code: 'invalid_input', retryable: false });

    await h.createServer({ name: 'taken', serverType: 'cx22', image: 'ubuntu-24.04', labels: {} });
    const taken = await failure(h.createServer({ name: 'taken', serverType: 'cx22', image: 'ubuntu-24.04', labels: {} }));
    expect(taken).to.include({ status: 409, code: 'uniqueness_error', retryable: false });
    expect(count('POST /hetzner/v1/servers')).to.equal(3);
  });

  it('does not repeat a create that failed with 503: the server may exist', async () => {
    sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 503, times: 1 }]);
    const err = await failure(
      client().createServer({ name: 'once', serverType: 'cx22', image: 'ubuntu-24.04', labels: {} }),
    );
    expect(err).to.include({ status: 503, retryable: true });
    expect(count('POST /hetzner/v1/servers')).to.equal(1);
  });

  it('does not repeat a create whose connection dropped', async () => {
    sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', drop: true, times: 1 }]);
    const err = await failure(
      client().createServer({ name: 'dropped', serverType: 'cx22', image: 'ubuntu-24.04', labels: {} }),
    );
    expect(err.code).to.equal('network_error');
    expect(count('POST /hetzner/v1/servers')).to.equal(1);
  });

  it('retries a power action refused with 423 locked', async () => {
    const id = existing();
    sim.control.setFaults([
      { method: 'POST', route: '/hetzner/v1/servers/{id}/actions/poweroff', status: 423, code: 'locked', times: 2 },
    ]);
    await client().powerOffServer(id);
    expect(count('POST /hetzner/v1/servers/{id}/actions/poweroff')).to.equal(3);
  });

  it('times out a hung request and retries it within maxRetries', async () => {
    const id = existing();
    sim.control.setFaults([{ method: 'GET', route: '/hetzner/v1/servers/{id}', hang: true }]);
    const observer = recordingObserver();
    const started = Date.now();
    const err = await failure(client({ requestTimeoutMs: 200, maxRetries: 1, observer }).getServer(id));
    const elapsed = Date.now() - started;

    expect(err).to.include({ code: 'timeout', status: 0, retryable: true });
    expect(err.message).to.contain('timed out after 200 ms');
    expect(observer.events.map((e) => e.status)).to.deep.equal(['timeout', 'timeout']);
    expect(elapsed).to.be.within(400, 1500);
  });

  it('waits out a 429 until the reset the API announced, then succeeds', async () => {
    const id = existing();
    sim.control.setTimings({ rateLimit: { limit: 3, refillPerSecond: 10 } });
    // Another process with the same token spends the whole budget.
    for (let i = 0; i < 3; i++) {
      await fetch(`${sim.hetznerUrl}/servers/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    }
    const sleeps: number[] = [];
    const observer = recordingObserver();
    const { logger, messages } = captureLogger();
    const h = client({
      observer,
      logger,
      maxRetries: 0,
      sleep: (ms) => {
        sleeps.push(ms);
        return new Promise((r) => setTimeout(r, ms));
      },
    });

    const started = Date.now();
    const server = await h.getServer(id);
    expect(server?.id).to.equal(id);
    expect(observer.events.map((e) => e.status)).to.deep.equal([429, 200]);
    // RateLimit-Reset is a whole second: the full budget is back within at most ~1.3 s.
    expect(sleeps).to.have.length(1);
    expect(sleeps[0]).to.be.within(250, 1400);
    expect(Date.now() - started).to.be.at.least(sleeps[0]);
    expect(messages('warn').some((m) => m.includes('Rate limited'))).to.equal(true);
  });

  it('reports a 429 with retryAfterMs once its own retry cap is spent', async () => {
    const id = existing();
    sim.control.setFaults([{ method: 'GET', route: '/hetzner/v1/servers/{id}', status: 429, times: 1 }]);
    const err = await failure(client({ maxRateLimitRetries: 0 }).getServer(id));
    expect(err).to.include({ status: 429, code: 'rate_limit_exceeded', retryable: true });
    expect(err.retryAfterMs).to.be.a('number').and.to.be.within(0, 2000);
  });

  it('slows down before the budget runs out instead of hitting 429', async () => {
    const id = existing();
    sim.control.setTimings({ rateLimit: { limit: 10, refillPerSecond: 20 } });
    const observer = recordingObserver();
    const h = client({ observer, maxRetries: 0 });

    const started = Date.now();
    for (let i = 0; i < 16; i++) await h.getServer(id);
    const elapsed = Date.now() - started;

    expect(observer.events.filter((e) => e.status === 429)).to.have.length(0);
    expect(observer.events).to.have.length(16);
    // 16 requests against a 10-request bucket refilling at 20/s need at least ~250 ms.
    expect(elapsed).to.be.at.least(200);
    expect(observer.events.at(-1)?.rateLimitLimit).to.equal(10);
  });

  it('makes concurrent callers share one limiter: after a 429 nobody else sends before the reset', async () => {
    const id = existing();
    sim.control.setTimings({ rateLimit: { limit: 3, refillPerSecond: 10 } });
    for (let i = 0; i < 3; i++) {
      await fetch(`${sim.hetznerUrl}/servers/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    }
    let second: Promise<unknown> | undefined;
    const statuses: Array<number | string> = [];
    const h: HetznerClient = client({
      maxRetries: 0,
      observer: {
        onRequest: (e) => {
          statuses.push(e.status);
          // A caller arriving while the first one waits out its 429 must queue behind the same reset.
          if (e.status === 429 && !second) second = h.getServer(id);
        },
      },
    });

    await h.getServer(id);
    await second;
    expect(statuses.filter((s) => s === 429)).to.have.length(1);
    expect(statuses).to.have.length(3);
    expect(h.rateLimiter.state().limit).to.equal(3);
  });
});
