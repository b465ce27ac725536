import type { Socket } from 'node:net';
import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';
import { openSse, openStalledSse, type SseConnection, type SseMessage } from './sse-client';
import { sendAndNeverRead } from './unread-request';

// Clients that open event streams or long polls and then do not read, or never go away, over real
// sockets against an API process: the caps answer 429, a stalled reader is cut off with the id to
// resume from, and every slot comes back when its client leaves.

describe('events: caps on streams and long polls, slow readers', function () {
  this.timeout(90_000);

  let suite: Suite;
  let api: Tailfleet;
  let client: ApiClient;
  /** A second token (read scope), so the per-token cap and the total can be told apart. */
  let other: { token: string; client: ApiClient };
  const sockets: Socket[] = [];
  const streams: SseConnection[] = [];

  before(async () => {
    suite = await createSuite('events_limits');
    api = await suite.launch({
      env: {
        ROLE: 'api',
        EVENT_STREAM_MAX_CONNECTIONS: '3',
        EVENT_STREAM_MAX_PER_TOKEN: '2',
        EVENT_STREAM_MAX_BUFFER_BYTES: '65536',
        LONG_POLL_MAX_CONNECTIONS: '3',
        LONG_POLL_MAX_PER_TOKEN: '2',
      },
    });
    client = apiClient(api.url!, suite.apiToken);
    const created = await client.post('/v1/tokens', { name: 'second-reader', scope: 'read' });
    expect(created.status).to.equal(201);
    other = { token: created.body.token, client: apiClient(api.url!, created.body.token) };
  });

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const s of streams.splice(0)) s.close();
    await waitFor('every slot to be free', () => api.requestLimits!.streams.size() === 0 && api.requestLimits!.longPolls.size() === 0);
  });

  after(async () => {
    await suite?.close();
  });

  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  const streamSlots = () => api.requestLimits!.streams.size();
  const pollSlots = () => api.requestLimits!.longPolls.size();

  /** An event stream from `Last-Event-ID: 0` whose client never reads. */
  const stalledStream = async (token: string) => {
    const socket = await sendAndNeverRead(api.url!, '/v1/events/stream', { ...auth(token), 'Last-Event-ID': '0', accept: 'text/event-stream' });
    sockets.push(socket);
    return socket;
  };

  const expectTooMany = (res: { status: number; headers: Headers; body: any }, scope: 'token' | 'server', limit: number) => {
    expect(res.status, JSON.stringify(res.body)).to.equal(429);
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(res.headers.get('retry-after')).to.match(/^\d+$/);
    expect(res.body).to.include({ type: 'urn:tailfleet:problem:too-many-requests', status: 429, limit, limitScope: scope });
  };

  /** `n` events written straight into the table (each NOTIFYs, as a transition's would). */
  const writeEvents = (n: number) =>
    suite.db.dataSource.query(
      `INSERT INTO events (entity_type, entity_id, to_status, reason)
       SELECT 'instance', gen_random_uuid(), 'running', 'written by the test, number ' || g FROM generate_series(1, $1) g`,
      [n],
    );
  const allIds = async (): Promise<string[]> =>
    (await suite.db.dataSource.query(`SELECT id::text AS id FROM events ORDER BY events.id`)).map((r: { id: string }) => r.id);

  describe('GET /v1/events/stream', () => {
    it('refuses a third stream of one token and a fourth in all with 429, and takes them again once clients leave', async () => {
      const [a1] = [await stalledStream(suite.apiToken), await stalledStream(suite.apiToken)];
      await waitFor('two streams of the first token', () => streamSlots() === 2);

      expectTooMany(await client.get('/v1/events/stream'), 'token', 2);
      // Another token still has room, up to the total.
      await stalledStream(other.token);
      await waitFor('three streams', () => streamSlots() === 3);
      expectTooMany(await other.client.get('/v1/events/stream'), 'server', 3);
      expect(api.eventStream!.size).to.equal(3);
      // Refusals hold nothing.
      expect(streamSlots()).to.equal(3);

      // A client that goes away gives its slot back: the next stream of that token is served.
      a1!.destroy();
      await waitFor('the slot to come back', () => streamSlots() === 2);
      const again = await openSse(`${api.url}/v1/events/stream`, suite.apiToken);
      streams.push(again);
      expect(again.status).to.equal(200);
      expect(streamSlots()).to.equal(3);

      for (const s of sockets.splice(0)) s.destroy();
      for (const s of streams.splice(0)) s.close();
      await waitFor('every stream to be gone', () => streamSlots() === 0 && api.eventStream!.size === 0);
      // No slot leaked: the full allowance again.
      await stalledStream(suite.apiToken);
      await stalledStream(suite.apiToken);
      await stalledStream(other.token);
      await waitFor('three streams again', () => streamSlots() === 3 && api.eventStream!.size === 3);
    });

    for (const start of ['replaying history', 'following live events'] as const) {
      it(`cuts off a reader that stalls while ${start}, which resumes from the id it got without a gap or a repeat`, async () => {
        if (start === 'replaying history') await writeEvents(5000);
        const headers: Record<string, string> = start === 'replaying history' ? { 'last-event-id': '0' } : {};
        const before = (await allIds()).at(-1) ?? '0';
        const stalled = await openStalledSse(`${api.url}/v1/events/stream`, suite.apiToken, headers);
        expect(stalled.status).to.equal(200);
        await waitFor('the stream to be served', () => api.eventStream!.size === 1);

        // Events keep coming while the client reads nothing: what waits for it passes 64 KiB and the
        // stream ends from our side.
        await waitFor(
          'the stalled stream to be cut off',
          async () => {
            if (api.eventStream!.size === 0) return true;
            await writeEvents(500);
            return false;
          },
          { timeoutMs: 30_000, intervalMs: 50 },
        );

        // The client reads on: every event up to the last one written to it, then the reason.
        const got = await stalled.read();
        const events = got.messages.filter((m) => m.event === undefined);
        const last = got.messages.at(-1)!;
        expect(last.event).to.equal('reconnect');
        expect(last.data.reason).to.equal('slow-consumer');
        expect(last.data.lastEventId).to.equal(events.at(-1)!.id);
        expect(got.comments.some((c) => c.includes(`Last-Event-ID: ${last.data.lastEventId}`))).to.equal(true);
        await waitFor('the slot to come back', () => streamSlots() === 0);

        // Resumed where it stopped, it gets the rest.
        const resumed = await openSse(`${api.url}/v1/events/stream`, suite.apiToken, { 'last-event-id': last.data.lastEventId });
        streams.push(resumed);
        expect(resumed.status).to.equal(200);
        const expected = (await allIds()).filter((id) => BigInt(id) > BigInt(headers['last-event-id'] ?? before));
        const ids = (ms: SseMessage[]) => ms.map((m) => m.id!);
        await waitFor('the resumed stream to catch up', () => resumed.messages.length >= expected.length - events.length, { timeoutMs: 30_000 });
        const streamed = [...ids(events), ...ids(resumed.messages)];
        expect(streamed.length).to.equal(expected.length);
        expect(streamed).to.deep.equal(expected);
      });
    }
  });

  describe('GET /v1/operations/:id?wait', () => {
    it('refuses a third long poll of one token and a fourth in all with 429, and takes them again once clients leave', async () => {
      const created = await client.post('/v1/agents', { name: 'waited-on' });
      expect(created.status).to.equal(201);
      // No worker runs: the operation stays queued and every wait lasts its full time.
      const path = `/v1/operations/${created.body.operation.id}`;
      const hold = async (token: string) => {
        const socket = await sendAndNeverRead(api.url!, `${path}?wait=30`, auth(token));
        sockets.push(socket);
        return socket;
      };
      const first = await hold(suite.apiToken);
      await hold(suite.apiToken);
      await waitFor('two long polls of the first token', () => pollSlots() === 2 && api.waiter!.size === 2);

      expectTooMany(await client.get(`${path}?wait=5`), 'token', 2);
      // Without `wait` the read is answered as always.
      expect((await client.get(path)).status).to.equal(200);
      await hold(other.token);
      await waitFor('three long polls', () => pollSlots() === 3);
      expectTooMany(await other.client.get(`${path}?wait=5`), 'server', 3);
      expect(api.waiter!.size).to.equal(3);

      first.destroy();
      await waitFor('the slot to come back', () => pollSlots() === 2 && api.waiter!.size === 2);
      const answered = await client.get(`${path}?wait=1`);
      expect(answered.status).to.equal(200);
      expect(answered.body.operation.status).to.equal('queued');
      expect(pollSlots(), 'a wait that answered gives its slot back').to.equal(2);

      for (const s of sockets.splice(0)) s.destroy();
      await waitFor('every long poll to be gone', () => pollSlots() === 0 && api.waiter!.size === 0);
      await hold(suite.apiToken);
      await hold(suite.apiToken);
      await hold(other.token);
      await waitFor('three long polls again', () => pollSlots() === 3);
    });
  });
});
