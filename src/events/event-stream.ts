import type { Response } from 'express';
import type { EventRepository } from '../db/event.repository';
import type { Event } from '../entities';
import type { Logger } from '../lib/logger';
import type { EventNotice, EventNotifications, EventSubscriber } from './notifications';
import { ReplayPages } from './replay-pages';
import { SentWindow } from './sent-window';

/**
 * GET /v1/events/stream: every event row as Server-Sent Events, `id:` being the row's id.
 *
 * A client starts at its `Last-Event-ID` (or at the newest event when it sends none). It is
 * registered for live events first, then the table is replayed after its cursor; live events that
 * arrive meanwhile are held and sent after the replay, and each connection remembers the ids it sent,
 * so nothing between the replay and the live feed is lost or sent twice. Live notifications are
 * batched and read from the table in one query for all clients. When the listener reconnects
 * (notifications may have been lost), every client replays from the last id it sent.
 *
 * Nothing is produced faster than a client reads. When the socket's buffer is full (`res.write`
 * answers false) the replay stops reading pages until 'drain', and live events queue for that client
 * alone. A client whose waiting bytes (socket buffer, queue and held events) pass `maxBufferBytes`
 * is cut off: it gets a last `event: reconnect` naming the id of the last event written to it, and
 * the response ends. Reconnecting with that id as `Last-Event-ID` (EventSource does it by itself)
 * resumes without a gap or a repeat, so a stalled reader costs the process a bounded amount of
 * memory instead of the whole history. Replays read a page at a time, through ReplayPages: a few
 * reads at once, each page serialised once for every client replaying the same stretch.
 */

export interface EventStreamDeps {
  events: Pick<EventRepository, 'listAfter' | 'findByIds' | 'latestId'>;
  notifications: Pick<EventNotifications, 'subscribe'>;
  logger: Logger;
  /** Time between heartbeat comments (default 15000). */
  heartbeatMs?: number;
  /** Rows per replay query (default 50: about one socket write, and one read of the query's answer). */
  replayBatch?: number;
  /** Replay queries running at once, for all clients together (default 2). */
  replayConcurrency?: number;
  /** Replay pages kept for other clients (default 64). */
  replayPagesKept?: number;
  /** Bytes that may wait for one client before it is cut off (default 1 MiB). */
  maxBufferBytes?: number;
  /** After a cut-off, how long the client has to read what is already written before the socket is destroyed (default 10000). */
  closeGraceMs?: number;
  /** Shape of each event's `data`. */
  view: (e: Event) => unknown;
}

// About the socket's own high-water mark: written in pieces of this size, a full socket is noticed
// (and the replay stops) with at most one piece more in memory.
const WRITE_BATCH_BYTES = 16_384;

/** One event, serialised once for every client it goes to. */
interface Chunk {
  id: string;
  agentId: string | null;
  text: string;
  bytes: number;
}

/** Why a stream ended from our side; the client reads it in the last `event: reconnect`. */
type EndReason = 'slow-consumer' | 'shutdown' | 'error';

interface StreamClient {
  res: Response;
  agentId?: string;
  /** Rows at or below this id belong to history the client already had when it connected. */
  floor: bigint;
  /** The highest id sent (the replay cursor after a listener reconnect). */
  cursor: bigint;
  /** When it registered for live events (or last had to catch up): the replay pages it may share. */
  registeredAt: number;
  sent: SentWindow;
  /** While replaying, live rows wait here. */
  held: Chunk[] | null;
  heldBytes: number;
  /** Events and comments written since the last flush: they go to the socket as one write. */
  batch: string[];
  batchBytes: number;
  /** The id of the last event in `batch`. */
  batchLastId: string | undefined;
  /** `res.write` answered false and 'drain' has not come yet. */
  blocked: boolean;
  /** Live events waiting for 'drain'. */
  queue: Chunk[];
  queuedBytes: number;
  /** The id of the last event handed to the socket: where the client resumes after a cut-off. */
  lastWritten: string;
  /** Wakes a replay waiting for 'drain'. */
  wake: (() => void) | undefined;
  heartbeat: NodeJS.Timeout;
  closed: boolean;
}

export class EventStream implements EventSubscriber {
  private readonly clients = new Set<StreamClient>();
  private pending: string[] = [];
  private flushing = false;
  private readonly maxBufferBytes: number;
  private readonly pages: ReplayPages;

  constructor(private readonly deps: EventStreamDeps) {
    this.maxBufferBytes = deps.maxBufferBytes ?? 1_048_576;
    this.pages = new ReplayPages({
      read: (afterId, opts) => deps.events.listAfter(afterId, opts),
      frame: (row) => this.frame(row),
      limit: deps.replayBatch ?? 50,
      concurrency: deps.replayConcurrency,
      keep: deps.replayPagesKept,
    });
    deps.notifications.subscribe(this);
  }

  get size(): number {
    return this.clients.size;
  }

  /** Serves one SSE client until it disconnects. `lastEventId` is a validated non-negative integer. */
  async open(res: Response, opts: { agentId?: string; lastEventId?: string }): Promise<void> {
    res.status(200);
    res.set({
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // Proxies that buffer responses (nginx) would hold events back.
      'x-accel-buffering': 'no',
    });

    const client: StreamClient = {
      res,
      agentId: opts.agentId,
      floor: 0n,
      cursor: 0n,
      registeredAt: this.pages.mark(),
      sent: new SentWindow(0n),
      held: [],
      heldBytes: 0,
      batch: [],
      batchBytes: 0,
      batchLastId: undefined,
      blocked: false,
      queue: [],
      queuedBytes: 0,
      lastWritten: '0',
      wake: undefined,
      heartbeat: setInterval(() => {
        this.write(client, ': heartbeat\n\n');
        this.flushWrites(client);
      }, this.deps.heartbeatMs ?? 15_000),
      closed: false,
    };
    client.heartbeat.unref();
    res.on('close', () => this.drop(client));
    // Registered before the replay reads: whatever commits after the replay's snapshot is notified to us.
    this.clients.add(client);
    try {
      const start = BigInt(opts.lastEventId ?? (await this.deps.events.latestId()));
      client.floor = start;
      client.cursor = start;
      client.sent = new SentWindow(start);
      client.lastWritten = start.toString();
      // Headers go out once the starting point is fixed: whatever is written after a client sees
      // them reaches it.
      res.flushHeaders();
      this.write(client, 'retry: 2000\n: connected\n\n');
      this.flushWrites(client);
      await this.replay(client);
    } catch (err) {
      // Before the headers, the error handler answers (a 503 problem when the database is down).
      if (!res.headersSent) {
        this.drop(client);
        throw err;
      }
      this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Event stream replay failed; closing the stream');
      this.end(client, 'error');
    }
  }

  interested(): boolean {
    return this.clients.size > 0;
  }

  notice(n: EventNotice): void {
    if (this.clients.size === 0) return;
    this.pending.push(n.id);
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => void this.flush());
    }
  }

  resync(): void {
    for (const client of this.clients) {
      // Notifications may have been lost: whatever it replays now must be read after this point.
      client.registeredAt = this.pages.mark();
      if (client.held !== null) continue; // already replaying; it reads the table anyway
      client.held = [];
      void this.replay(client).catch((err: unknown) => {
        this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Event stream catch-up failed; closing the stream');
        this.end(client, 'error');
      });
    }
  }

  /** Ends every stream (shutdown); clients reconnect elsewhere with their Last-Event-ID. */
  close(): void {
    for (const client of [...this.clients]) this.end(client, 'shutdown');
  }

  private async flush(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const ids = this.pending.splice(0, 1000);
        if (this.clients.size === 0) continue;
        const chunks = (await this.deps.events.findByIds(ids)).map((row) => this.chunk(row));
        for (const client of this.clients) {
          this.deliver(client, chunks);
          this.flushWrites(client);
        }
      }
    } catch (err) {
      // The rows are in the table: a catch-up replay finds them.
      this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Could not read notified events; streams catch up from the table');
      this.pending = [];
      this.resync();
    } finally {
      this.flushing = false;
      if (this.pending.length > 0) {
        this.flushing = true;
        setImmediate(() => void this.flush());
      }
    }
  }

  /**
   * Reads the table after the client's cursor, one page at a time, and only while the client keeps
   * up: the next page is read once the socket has room again.
   */
  private async replay(client: StreamClient): Promise<void> {
    for (;;) {
      await this.writable(client);
      if (client.closed) return;
      const page = await this.pages.get(client.cursor.toString(), { agentId: client.agentId, registeredAt: client.registeredAt });
      if (client.closed) return;
      const lastId = page.ids.at(-1);
      if (lastId !== undefined) {
        // Every row of the page is above the cursor, and every id sent so far is at or below it:
        // none of them was sent yet.
        for (const id of page.ids) client.sent.add(BigInt(id));
        client.cursor = BigInt(lastId);
        this.write(client, page.text, { id: lastId, agentId: null, text: page.text, bytes: page.bytes });
        this.flushWrites(client);
      }
      if (page.last) break;
    }
    const held = client.held ?? [];
    client.held = null;
    client.heldBytes = 0;
    for (const chunk of held) this.offer(client, chunk);
    this.flushWrites(client);
  }

  private deliver(client: StreamClient, chunks: readonly Chunk[]): void {
    for (const chunk of chunks) {
      if (client.closed) return;
      if (client.agentId !== undefined && chunk.agentId !== client.agentId) continue;
      if (client.held) {
        if (BigInt(chunk.id) <= client.floor) continue;
        client.held.push(chunk);
        client.heldBytes += chunk.bytes;
        this.checkBuffer(client);
      } else {
        this.offer(client, chunk);
      }
    }
  }

  /** Sends an event the client has not had yet. */
  private offer(client: StreamClient, chunk: Chunk): void {
    if (client.closed) return;
    const id = BigInt(chunk.id);
    if (id <= client.floor || client.sent.has(id)) return;
    client.sent.add(id);
    if (id > client.cursor) client.cursor = id;
    this.write(client, chunk.text, chunk);
  }

  /**
   * Adds to the client's next write, or, while its socket is full, queues events (and drops
   * comments: a heartbeat is no use then). Whoever writes calls flushWrites() when done.
   */
  private write(client: StreamClient, text: string, event?: Chunk): void {
    const { res } = client;
    if (client.closed || res.writableEnded || res.destroyed) return;
    if (client.blocked) {
      if (!event) return;
      client.queue.push(event);
      client.queuedBytes += event.bytes;
      this.checkBuffer(client);
      return;
    }
    client.batch.push(text);
    client.batchBytes += event?.bytes ?? text.length;
    if (event) client.batchLastId = event.id;
    if (client.batchBytes >= WRITE_BATCH_BYTES) this.flushWrites(client);
  }

  /** One socket write for what was batched: a write per event would cost more than the event. */
  private flushWrites(client: StreamClient): void {
    const { res } = client;
    if (client.batch.length === 0) return;
    const text = client.batch.length === 1 ? client.batch[0]! : client.batch.join('');
    const lastId = client.batchLastId;
    client.batch = [];
    client.batchBytes = 0;
    client.batchLastId = undefined;
    if (client.closed || res.writableEnded || res.destroyed) return;
    const room = res.write(text);
    if (lastId !== undefined) client.lastWritten = lastId;
    if (!room) {
      client.blocked = true;
      res.once('drain', () => this.drained(client));
    }
  }

  private drained(client: StreamClient): void {
    if (client.closed) return;
    client.blocked = false;
    while (client.queue.length > 0 && !client.blocked && !client.closed) {
      const next = client.queue.shift()!;
      client.queuedBytes -= next.bytes;
      this.write(client, next.text, next);
    }
    this.flushWrites(client);
    if (client.blocked) return;
    const wake = client.wake;
    client.wake = undefined;
    wake?.();
  }

  /** Resolves once the socket has room again (or the client is gone). */
  private writable(client: StreamClient): Promise<void> {
    if (!client.blocked || client.closed) return Promise.resolve();
    return new Promise((resolve) => {
      client.wake = resolve;
    });
  }

  private checkBuffer(client: StreamClient): void {
    // Before the headers the starting point is not fixed yet; the replay decides what is sent.
    if (!client.res.headersSent) return;
    const waiting = client.res.writableLength + client.queuedBytes + client.heldBytes;
    if (waiting <= this.maxBufferBytes) return;
    this.deps.logger.info(
      { waitingBytes: waiting, lastEventId: client.lastWritten },
      'Event stream client reads too slowly; ending its stream (it resumes from its last event id)',
    );
    this.end(client, 'slow-consumer');
  }

  /**
   * Ends a stream from our side. The last message goes behind what the socket already holds, so a
   * client that reads on gets every event up to `lastEventId` and then this; one that never reads is
   * destroyed after the grace period.
   */
  private end(client: StreamClient, reason: EndReason): void {
    const { res } = client;
    this.flushWrites(client);
    const lastEventId = client.lastWritten;
    this.drop(client);
    if (res.writableEnded || res.destroyed) return;
    const notice = JSON.stringify({ reason, lastEventId });
    res.end(`: stream ended (${reason}): reconnect with Last-Event-ID: ${lastEventId}\nevent: reconnect\ndata: ${notice}\n\n`);
    const timer = setTimeout(() => res.destroy(), this.deps.closeGraceMs ?? 10_000);
    timer.unref();
    res.once('close', () => clearTimeout(timer));
  }

  private drop(client: StreamClient): void {
    if (client.closed) return;
    client.closed = true;
    clearInterval(client.heartbeat);
    this.clients.delete(client);
    // What waited for this client is never sent.
    client.queue = [];
    client.queuedBytes = 0;
    client.held = null;
    client.heldBytes = 0;
    const wake = client.wake;
    client.wake = undefined;
    wake?.();
  }

  private chunk(row: Event): Chunk {
    const text = this.frame(row);
    return { id: row.id, agentId: row.agentId, text, bytes: Buffer.byteLength(text) };
  }

  /** One event as an SSE message. */
  private frame(row: Event): string {
    return `id: ${row.id}\ndata: ${JSON.stringify(this.deps.view(row))}\n\n`;
  }
}
