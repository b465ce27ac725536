import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';
import { openSse, type SseConnection } from './sse-client';

// Waiting on operations and following events, over real HTTP: an API-only process answers the long
// polls and the stream, a worker process (launched when the test wants the work to happen) writes
// the events; both talk only through PostgreSQL (the events table) and Redis.

describe('events: waiting on operations and the event stream', function () {
  this.timeout(60_000);

  let suite: Suite;
  let api: Tailfleet;
  let client: ApiClient;
  let worker: Tailfleet | undefined;

  before(async () => {
    // Each cloud action takes a while, so a provision is seen queued and running before it ends.
    suite = await createSuite('events_waiting', { actionDurationMs: 150, bootMs: 150, enrollDelayMs: 150, shutdownMs: 50 });
    api = await suite.launch({ env: { ROLE: 'api' } });
    client = apiClient(api.url!, suite.apiToken);
  });

  after(async () => {
    await suite?.close();
  });

  const startWorker = async () => {
    worker ??= await suite.launch({ env: { ROLE: 'worker', RELAY_INTERVAL_MS: '200' } });
    return worker;
  };

  const eventIds = async (agentId?: string): Promise<string[]> => {
    const rows: Array<{ id: string }> = await suite.db.dataSource.query(
      `SELECT id::text AS id FROM events ${agentId ? 'WHERE agent_id = $1' : ''} ORDER BY events.id`,
      agentId ? [agentId] : [],
    );
    return rows.map((r) => r.id);
  };

  describe('GET /v1/operations/:id?wait=N', () => {
    it('answers with the current state when the time runs out, and refuses more than 60 seconds', async () => {
      const created = await client.post('/v1/agents', { name: 'waits-in-vain' });
      expect(created.status).to.equal(201);
      const id = created.body.operation.id as string;

      // No worker runs yet: the operation stays queued.
      const started = Date.now();
      const res = await client.get(`/v1/operations/${id}?wait=1`);
      const spent = Date.now() - started;
      expect(res.status).to.equal(200);
      expect(res.body.operation.status).to.equal('queued');
      expect(spent).to.be.within(950, 5000);

      for (const bad of ['61', '-1', 'soon', '1.5']) {
        const refused = await client.get(`/v1/operations/${id}?wait=${bad}`);
        expect(refused.status, bad).to.equal(400);
        expect(refused.body.errors[0].path).to.equal('query.wait');
      }
      // The unknown operation is a 404 at once, wait or not.
      const unknown = await client.get('/v1/operations/00000000-0000-4000-8000-000000000000?wait=30');
      expect(unknown.status).to.equal(404);
    });

    it('answers as soon as the operation ends, also when the listener connection dropped while it waited', async () => {
      const created = await client.post('/v1/agents', { name: 'waits-for-the-end' });
      const id = created.body.operation.id as string;

      const started = Date.now();
      const waiting = client.get(`/v1/operations/${id}?wait=45`);
      await waitFor('the request to be waiting', () => api.waiter!.size === 1);
      // The LISTEN connection goes away: the listener reconnects and the waiter reads again.
      await api.notifications.dropConnection();
      await waitFor('the listener to be back', () => api.notifications.listening, { timeoutMs: 15_000 });
      expect(api.waiter!.size).to.equal(1);

      await startWorker();
      const res = await waiting;
      const spent = Date.now() - started;
      expect(res.status).to.equal(200);
      expect(res.body.operation.status).to.equal('succeeded');
      expect(res.body.operation.progress).to.equal(100);
      // Answered at the end of the operation, long before the 45 seconds.
      expect(spent).to.be.below(30_000);
      const finishedAt = new Date(res.body.operation.finishedAt).getTime();
      expect(Date.now() - finishedAt).to.be.below(2000);
      expect(api.waiter!.size).to.equal(0);

      // Already final: answered at once.
      const again = Date.now();
      expect((await client.get(`/v1/operations/${id}?wait=30`)).body.operation.status).to.equal('succeeded');
      expect(Date.now() - again).to.be.below(1000);
    });
  });

  describe('GET /v1/events/stream', () => {
    const streams: SseConnection[] = [];
    const open = async (query = '', headers: Record<string, string> = {}) => {
      const s = await openSse(`${api.url}/v1/events/stream${query}`, suite.apiToken, headers);
      streams.push(s);
      return s;
    };
    afterEach(() => {
      for (const s of streams.splice(0)) s.close();
    });

    it('refuses a bad Last-Event-ID or agentId, and a request without a token', async () => {
      expect((await open('', { 'last-event-id': 'abc' })).status).to.equal(400);
      expect((await open('?agentId=nope')).status).to.equal(400);
      expect((await open('?since=1')).status).to.equal(400);
      const anonymous = await fetch(`${api.url}/v1/events/stream`);
      expect(anonymous.status).to.equal(401);
    });

    it('sends every event as it is written, and resumes after a reconnect without a gap or a repeat', async () => {
      await startWorker();
      const since = async (after: string) => (await eventIds()).filter((id) => BigInt(id) > BigInt(after));
      const ids = (s: SseConnection) => s.messages.map((m) => m.id!);
      // Opened from a known id: a stream opened "from now" cannot say which of the events committing
      // at that moment it counts as seen, and neither could the test.
      const baseline = (await eventIds()).at(-1) ?? '0';
      const first = await open('', { 'last-event-id': baseline });
      expect(first.status).to.equal(200);
      expect(first.contentType).to.match(/^text\/event-stream/);

      // Written by the API and the worker: the agent, its instance, job and operation, then the provision.
      const created = await client.post('/v1/agents', { name: 'streamed' });
      const agentId = created.body.agent.id as string;
      const operationId = created.body.operation.id as string;
      await waitFor('the provision to succeed', async () => (await client.get(`/v1/operations/${operationId}`)).body.operation.status === 'succeeded');
      // Every event written since the stream opened reaches it, in order (polled until both sides agree).
      const written = await waitFor('the stream to carry every event written', async () => {
        const all = await since(baseline);
        return all.length > 0 && JSON.stringify(ids(first)) === JSON.stringify(all) ? all : undefined;
      });
      expect(first.messages[0]!.data).to.include({ id: written[0], agentId });
      first.close();
      await first.ended;
      const lastSeen = first.messages.at(-1)!.id!;

      // While nobody listens, the agent is stopped: more events.
      const stop = await client.post(`/v1/agents/${agentId}/stop`);
      expect(stop.status).to.equal(202);
      await waitFor('the stop to succeed', async () => (await client.get(`/v1/operations/${stop.body.operation.id}`)).body.operation.status === 'succeeded');
      const missed = await since(lastSeen);
      expect(missed.length).to.be.greaterThan(3);

      // Reconnect where we left off: the missed ones, then live ones.
      const second = await open('', { 'last-event-id': lastSeen });
      await waitFor('the replay', () => second.messages.length >= missed.length);
      expect(ids(second).slice(0, missed.length)).to.deep.equal(missed);

      const start = await client.post(`/v1/agents/${agentId}/start`);
      expect(start.status).to.equal(202);
      await waitFor('the start to succeed', async () => (await client.get(`/v1/operations/${start.body.operation.id}`)).body.operation.status === 'succeeded');
      const all = await waitFor('the live events', async () => {
        const everything = await since(baseline);
        return JSON.stringify([...ids(first), ...ids(second)]) === JSON.stringify(everything) ? everything : undefined;
      });
      // No repeat on the streams: the ids from the database are unique anyway.
      const streamed = [...ids(first), ...ids(second)];
      expect(new Set(streamed).size).to.equal(streamed.length);
      expect(streamed).to.include.members(all);
      const resumed = second.messages.find((m) => m.data.entityType === 'agent' && m.data.toStatus === 'active');
      expect(resumed, 'the agent active again, live on the resumed stream').to.not.equal(undefined);
    });

    it('filters by agent, and forgets a client that went away', async () => {
      const other = await client.post('/v1/agents', { name: 'not-followed' });
      const followed = await client.post('/v1/agents', { name: 'followed' });
      const agentId = followed.body.agent.id as string;
      const stream = await open(`?agentId=${agentId}`, { 'last-event-id': '0' });
      const mine = await eventIds(agentId);
      await waitFor('the agent\'s events', () => stream.messages.length >= mine.length);
      expect(stream.messages.slice(0, mine.length).map((m) => m.id)).to.deep.equal(mine);
      expect(stream.messages.every((m) => m.data.agentId === agentId)).to.equal(true);
      expect(stream.messages.some((m) => m.data.agentId === other.body.agent.id)).to.equal(false);

      expect(api.eventStream!.size).to.be.greaterThan(0);
      for (const s of streams.splice(0)) s.close();
      await waitFor('the stream to be dropped', () => api.eventStream!.size === 0);
    });
  });
});
