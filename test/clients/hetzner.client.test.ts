import { expect } from 'chai';
import { ActionFailedError, HetznerClient, HetznerClientDeps, WaitTimeoutError } from '../../src/clients';
import { SIM_DEFAULT_CREDENTIALS, startSimulator, type RunningSimulator, type SimTimingsInput } from '../../src/simulator';
import { captureLogger } from './clients.helpers';

const POLL_MS = 20;
const FAST: SimTimingsInput = {
  actionDurationMs: 30,
  bootMs: 10,
  enrollDelayMs: 10,
  shutdownMs: 60,
  ignoreAcpiRate: 0,
  rateLimit: { limit: 100_000, refillPerSecond: 100_000 },
};
const MANAGED = { 'managed-by': 'tailfleet' };

describe('HetznerClient (against the simulator)', () => {
  let sim: RunningSimulator;
  let seq = 0;

  before(async () => {
    sim = await startSimulator({ port: 0, timings: FAST });
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
      token: SIM_DEFAULT_CREDENTIALS.hetznerToken,
      actionPollIntervalMs: POLL_MS,
      serverPollIntervalMs: POLL_MS,
      retryBaseDelayMs: 5,
      retryMaxDelayMs: 20,
      requestTimeoutMs: 2000,
      ...extra,
    });
  }

  const counts = () => sim.control.requestCounts();
  const count = (key: string) => counts()[key] ?? 0;

  /** Creates a running server through the API, the way provisioning does. */
  async function runningServer(h: HetznerClient, labels: Record<string, string> = MANAGED): Promise<number> {
    const { server, action, nextActions } = await h.createServer({
      name: `agent-${++seq}`,
      serverType: 'cx22',
      image: 'ubuntu-24.04',
      location: 'fsn1',
      labels,
    });
    await h.waitForActions([action.id, ...nextActions.map((a) => a.id)]);
    return server.id;
  }

  describe('servers', () => {
    it('creates a server, waits for its actions and reads it back', async () => {
      const h = client();
      const { server, action, nextActions } = await h.createServer({
        name: 'agent-create',
        serverType: 'cx22',
        image: 'ubuntu-24.04',
        location: 'fsn1',
        userData: '#cloud-config\n',
        labels: { ...MANAGED, agent: 'a1' },
      });
      expect(server.name).to.equal('agent-create');
      expect(server.labels).to.deep.equal({ ...MANAGED, agent: 'a1' });
      expect(action.command).to.equal('create_server');
      expect(action.status).to.equal('running');

      const done = await h.waitForActions([action.id, ...nextActions.map((a) => a.id)]);
      expect(done.every((a) => a.status === 'success')).to.equal(true);

      const read = await h.getServer(server.id);
      expect(read?.status).to.equal('running');
      expect(read?.public_net.ipv4?.ip).to.be.a('string');
    });

    it('returns null for a server that does not exist', async () => {
      expect(await client().getServer(987654)).to.equal(null);
      expect(count('GET /hetzner/v1/servers/{id}')).to.equal(1);
    });

    it('lists every page of servers matching a label selector', async () => {
      for (let i = 0; i < 53; i++) sim.control.createServer({ name: `bulk-${i}`, labels: MANAGED, status: 'running' });
      sim.control.createServer({ name: 'unmanaged', labels: { team: 'other' } });
      sim.control.resetRequestCounts();

      const servers = await client().listServers('managed-by=tailfleet');
      expect(servers).to.have.length(53);
      expect(new Set(servers.map((s) => s.id)).size).to.equal(53);
      expect(count('GET /hetzner/v1/servers')).to.equal(2);

      expect(await client().listServers()).to.have.length(54);
    });

    it('deletes a server and waits for the delete action; a second delete reports it gone', async () => {
      const h = client();
      const id = await runningServer(h);
      expect(await h.deleteServer(id)).to.equal(true);
      expect(await h.getServer(id)).to.equal(null);
      expect(await h.deleteServer(id)).to.equal(false);
    });
  });

  describe('power', () => {
    it('shuts a server down gracefully, watching the server until it is off', async () => {
      const { logger, messages } = captureLogger();
      const h = client({ logger });
      const id = await runningServer(h);
      sim.control.resetRequestCounts();

      expect(await h.shutdownServer(id, { timeoutMs: 2000 })).to.equal('graceful');
      expect((await h.getServer(id))?.status).to.equal('off');
      expect(messages('info')).to.include(`[Hetzner] Server ${id} shut down gracefully`);
      expect(count('POST /hetzner/v1/servers/{id}/actions/shutdown')).to.equal(1);
      expect(count('POST /hetzner/v1/servers/{id}/actions/poweroff')).to.equal(0);
      // A lone waiter reads its server directly rather than listing the fleet.
      expect(count('GET /hetzner/v1/servers')).to.equal(0);
    });

    it('does not send a shutdown to a server that is already off', async () => {
      const h = client();
      const id = await runningServer(h);
      sim.control.updateServer(id, { status: 'off' });
      sim.control.resetRequestCounts();

      expect(await h.shutdownServer(id)).to.equal('already_off');
      expect(count('POST /hetzner/v1/servers/{id}/actions/shutdown')).to.equal(0);
      expect(count('GET /hetzner/v1/servers/{id}')).to.equal(1);
    });

    it('powers off a server that ignores ACPI once the timeout has passed', async () => {
      const { logger, messages } = captureLogger();
      const h = client({ logger });
      const id = await runningServer(h);
      sim.control.updateServer(id, { ignoresAcpi: true });
      sim.control.resetRequestCounts();

      const started = Date.now();
      expect(await h.shutdownServer(id, { timeoutMs: 150 })).to.equal('forced');
      expect(Date.now() - started).to.be.at.least(150);
      expect((await h.getServer(id))?.status).to.equal('off');
      expect(count('POST /hetzner/v1/servers/{id}/actions/shutdown')).to.equal(1);
      expect(count('POST /hetzner/v1/servers/{id}/actions/poweroff')).to.equal(1);
      expect(messages('warn').some((m) => m.includes(`Server ${id}`) && m.includes('forced power off'))).to.equal(true);
      expect(messages('warn')).to.include(`[Hetzner] Server ${id} forced power off`);
    });

    it('powers a server on, and does nothing when it already runs', async () => {
      const { logger, messages } = captureLogger();
      const h = client({ logger });
      const id = await runningServer(h);
      await h.powerOffServer(id);
      expect((await h.getServer(id))?.status).to.equal('off');

      expect(await h.powerOnServer(id)).to.equal('powered_on');
      expect((await h.getServer(id))?.status).to.equal('running');
      expect(messages('info')).to.include(`[Hetzner] Server ${id} powered on`);

      sim.control.resetRequestCounts();
      expect(await h.powerOnServer(id)).to.equal('already_running');
      expect(count('POST /hetzner/v1/servers/{id}/actions/poweron')).to.equal(0);
    });

    it('reports a shutdown whose action failed, once the server is not off in time, without forcing it', async () => {
      const h = client();
      const id = await runningServer(h);
      sim.control.updateServer(id, { failNextAction: 'acpi lost' });
      sim.control.resetRequestCounts();

      const err = await h.shutdownServer(id, { timeoutMs: 150 }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ActionFailedError);
      expect((err as ActionFailedError).message).to.contain('acpi lost');
      expect(count('POST /hetzner/v1/servers/{id}/actions/poweroff')).to.equal(0);
      expect((await h.getServer(id))?.status).to.equal('running');
    });

    it('rejects with ActionFailedError when an action ends in error', async () => {
      const h = client();
      const id = await runningServer(h);
      sim.control.updateServer(id, { failNextAction: 'disk on fire' });

      const err = await h.powerOffServer(id).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(ActionFailedError);
      expect((err as ActionFailedError).code).to.equal('action_failed');
      expect((err as ActionFailedError).message).to.contain('disk on fire');
    });
  });

  describe('shared waiting', () => {
    it('serves 25 concurrent action waits with one GET /actions per interval', async () => {
      const h = client();
      sim.control.setTimings({ actionDurationMs: { create_server: 200, start_server: 200 } });
      const created = await Promise.all(
        Array.from({ length: 25 }, (_, i) =>
          h.createServer({ name: `wait-${i}`, serverType: 'cx22', image: 'ubuntu-24.04', labels: MANAGED }),
        ),
      );
      sim.control.resetRequestCounts();

      const started = Date.now();
      const actions = await Promise.all(created.map((c) => h.waitForAction(c.action.id)));
      const elapsed = Date.now() - started;

      expect(actions.map((a) => a.status)).to.deep.equal(Array(25).fill('success'));
      const polls = count('GET /hetzner/v1/actions');
      const intervals = Math.ceil(elapsed / POLL_MS);
      expect(polls).to.be.at.least(1);
      expect(polls).to.be.at.most(intervals + 1);
      // A poller per action would have needed about 25 × the intervals.
      expect(polls).to.be.below(25);
      expect(count('GET /hetzner/v1/actions/{id}')).to.equal(0);
    });

    it('splits more than 25 pending actions into chunks of 25 per poll', async () => {
      const idsPerPoll: number[] = [];
      const h = client({
        fetch: (input, init) => {
          const url = new URL(String(input));
          if (url.pathname.endsWith('/actions')) idsPerPoll.push(url.searchParams.getAll('id').length);
          return fetch(input, init);
        },
      });
      sim.control.setTimings({ actionDurationMs: { create_server: 100, start_server: 100 } });
      const created = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          h.createServer({ name: `chunk-${i}`, serverType: 'cx22', image: 'ubuntu-24.04', labels: MANAGED }),
        ),
      );
      sim.control.resetRequestCounts();

      const started = Date.now();
      await h.waitForActions(created.map((c) => c.action.id));
      const intervals = Math.ceil((Date.now() - started) / POLL_MS);
      expect(idsPerPoll.slice(0, 2).sort((a, b) => a - b)).to.deep.equal([5, 25]);
      expect(Math.max(...idsPerPoll)).to.equal(25);
      expect(count('GET /hetzner/v1/actions')).to.equal(idsPerPoll.length);
      expect(idsPerPoll.length).to.be.at.most(2 * (intervals + 1));
    });

    it('times a wait out with a typed error', async () => {
      const h = client();
      sim.control.setTimings({ actionDurationMs: { create_server: 5000 } });
      const { action } = await h.createServer({ name: 'slow', serverType: 'cx22', image: 'ubuntu-24.04', labels: MANAGED });
      const err = await h.waitForAction(action.id, { timeoutMs: 60 }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(WaitTimeoutError);
      expect((err as WaitTimeoutError).code).to.equal('action_timeout');
    });

    it('serves many concurrent server waits from one labelled listing per interval', async () => {
      const h = client();
      const ids = await Promise.all(Array.from({ length: 10 }, () => runningServer(h)));
      sim.control.setTimings({ shutdownMs: 200 });
      sim.control.resetRequestCounts();

      const started = Date.now();
      const results = await Promise.all(ids.map((id) => h.shutdownServer(id, { timeoutMs: 3000 })));
      const intervals = Math.ceil((Date.now() - started) / POLL_MS);

      expect(results).to.deep.equal(Array(10).fill('graceful'));
      // The ten up-front reads are one batched listing, and every status check after it is shared.
      expect(count('GET /hetzner/v1/servers/{id}')).to.be.at.most(1);
      const listings = count('GET /hetzner/v1/servers');
      expect(listings).to.be.at.least(2);
      expect(listings).to.be.at.most(intervals + 2);
    });

    it('answers concurrent shared listings from one managed listing, each with its own servers', async () => {
      const h = client({ listingWindowMs: 50 });
      const ids = await Promise.all(['x', 'y', 'z'].map((agent) => runningServer(h, { ...MANAGED, agent })));
      sim.control.resetRequestCounts();
      const found = await Promise.all(['x', 'y', 'z'].map((agent) => h.listServersShared(`managed-by=tailfleet,agent=${agent}`)));
      expect(found.map((servers) => servers.map((x) => x.id))).to.deep.equal(ids.map((id) => [id]));
      expect(count('GET /hetzner/v1/servers')).to.equal(1);

      // A server deleted before the call is never in its answer.
      await h.deleteServer(ids[0]);
      expect(await h.listServersShared('managed-by=tailfleet,agent=x')).to.deep.equal([]);
    });

    it('lists the servers waited for by their identity label, a page of 50 per request, and only those', async () => {
      const selectors: string[] = [];
      const h = client({
        identityLabel: 'inst',
        fetch: (input, init) => {
          const url = new URL(String(input));
          if (url.pathname.endsWith('/servers')) selectors.push(url.searchParams.get('label_selector') ?? '');
          return fetch(input, init);
        },
      });
      const ids = await Promise.all(Array.from({ length: 70 }, (_, i) => runningServer(h, { ...MANAGED, inst: `i-${i}` })));
      const waited = ids.slice(0, 55);
      selectors.length = 0;
      sim.control.resetRequestCounts();

      const waits = Promise.all(waited.map((id) => h.waitForServerStatus(id, 'off', { timeoutMs: 3000 })));
      for (const id of waited) sim.control.updateServer(id, { status: 'off' });
      const servers = await waits;

      expect(servers.map((x) => x?.status)).to.deep.equal(Array(55).fill('off'));
      expect(selectors.length).to.be.at.least(2);
      // Never the whole managed listing: each request names at most 50 of the servers waited for.
      for (const selector of selectors) {
        const named = /^managed-by=tailfleet,inst in \(([^)]*)\)$/.exec(selector);
        expect(named, selector).to.not.equal(null);
        const values = named![1]!.split(',');
        expect(values.length).to.be.at.most(50);
        expect(values.every((v) => Number(v.slice(2)) < 55)).to.equal(true);
      }
      expect(count('GET /hetzner/v1/servers/{id}')).to.equal(0);
    });

    it('reads a server missing from its identity listing before reporting it gone', async () => {
      const h = client({ identityLabel: 'inst' });
      const [kept, gone] = await Promise.all(['a', 'b'].map((inst) => runningServer(h, { ...MANAGED, inst })));
      sim.control.resetRequestCounts();
      const both = Promise.all([h.waitForServerStatus(kept, 'off', { timeoutMs: 2000 }), h.waitForServerStatus(gone, 'off', { timeoutMs: 2000 })]);
      sim.control.deleteServer(gone);
      sim.control.updateServer(kept, { status: 'off' });
      const [a, b] = await both;
      expect(a?.status).to.equal('off');
      expect(b).to.equal(null);
      expect(count('GET /hetzner/v1/servers/{id}')).to.be.at.least(1);
    });

    it('resolves a server wait with null when the server disappears', async () => {
      const h = client();
      const id = await runningServer(h);
      const waiting = h.waitForServerStatus(id, 'off', { timeoutMs: 2000 });
      sim.control.deleteServer(id);
      expect(await waiting).to.equal(null);
    });

    it('confirms a server missing from the listing before reporting it gone', async () => {
      const h = client();
      const managed = await runningServer(h);
      const unlabelled = await runningServer(h, { team: 'other' });
      const both = Promise.all([
        h.waitForServerStatus(managed, 'off', { timeoutMs: 2000 }),
        h.waitForServerStatus(unlabelled, 'off', { timeoutMs: 2000 }),
      ]);
      sim.control.updateServer(managed, { status: 'off' });
      sim.control.updateServer(unlabelled, { status: 'off' });
      const [a, b] = await both;
      expect(a?.status).to.equal('off');
      expect(b?.status).to.equal('off');
    });
  });
});
