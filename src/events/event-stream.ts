import type { Response } from 'express';
import type { EventRepository } from '../db/event.repository';
import type { Event } from '../entities';
import type { Logger } from '../lib/logger';
import type { EventNotice, EventNotifications, EventSubscriber } from './notifications';

/**
 * GET /v1/events/stream: every event row as Server-Sent Events, `id:` being the row's id.
 *
 * A client starts at its `Last-Event-ID` (or at the newest event when it sends none). It is
 * registered for live events first, then the table is replayed after its cursor; live events that
 * arrive meanwhile are held and sent after the replay, and each connection remembers the ids it sent,
 * so nothing between the replay and the live feed is lost or sent twice. Live notifications are
 * batched and read from the table in one query for all clients. When the listener reconnects
 * (notifications may have been lost), every client replays from the last id it sent.
 */

export interface EventStreamDeps {
  events: Pick<EventRepository, 'listAfter' | 'findByIds' | 'latestId'>;
  notifications: Pick<EventNotifications, 'subscribe'>;
  logger: Logger;
  /** Time between heartbeat comments (default 15000). */
  heartbeatMs?: number;
  /** Rows per replay query (default 500). */
  replayBatch?: number;
  /** Shape of each event's `data`. */
  view: (e: Event) => unknown;
}

// Enough to recognise every row a replay and the live feed could both carry.
const SENT_MEMORY = 10_000;

interface StreamClient {
  res: Response;
  agentId?: string;
  /** Rows at or below this id belong to history the client already had when it connected. */
  floor: bigint;
  /** The highest id sent (the replay cursor after a listener reconnect). */
  cursor: bigint;
  sent: Set<string>;
  /** While replaying, live rows wait here. */
  held: Event[] | null;
  heartbeat: NodeJS.Timeout;
  closed: boolean;
}

export class EventStream implements EventSubscriber {
  private readonly clients = new Set<StreamClient>();
  private pending: string[] = [];
  private flushing = false;

  constructor(private readonly deps: EventStreamDeps) {
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
      sent: new Set(),
      held: [],
      heartbeat: setInterval(() => this.write(client, ': heartbeat\n\n'), this.deps.heartbeatMs ?? 15_000),
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
      // Headers go out once the starting point is fixed: whatever is written after a client sees
      // them reaches it.
      res.flushHeaders();
      res.write('retry: 2000\n: connected\n\n');
      await this.replay(client);
    } catch (err) {
      this.drop(client);
      // Before the headers, the error handler answers (a 503 problem when the database is down).
      if (!res.headersSent) throw err;
      this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Event stream replay failed; closing the stream');
      res.end();
    }
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
      if (client.held !== null) continue; // already replaying; it reads the table anyway
      client.held = [];
      void this.replay(client).catch((err: unknown) => {
        this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Event stream catch-up failed; closing the stream');
        client.res.end();
        this.drop(client);
      });
    }
  }

  /** Ends every stream (shutdown); clients reconnect elsewhere with their Last-Event-ID. */
  close(): void {
    for (const client of [...this.clients]) {
      client.res.end();
      this.drop(client);
    }
  }

  private async flush(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const ids = this.pending.splice(0, 1000);
        if (this.clients.size === 0) continue;
        const rows = await this.deps.events.findByIds(ids);
        for (const client of this.clients) {
          if (client.held) client.held.push(...rows);
          else this.send(client, rows);
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

  private async replay(client: StreamClient): Promise<void> {
    const limit = this.deps.replayBatch ?? 500;
    for (;;) {
      if (client.closed) return;
      const rows = await this.deps.events.listAfter(client.cursor.toString(), { agentId: client.agentId, limit });
      this.send(client, rows);
      if (rows.length < limit) break;
    }
    const held = client.held ?? [];
    client.held = null;
    this.send(client, held);
  }

  private send(client: StreamClient, rows: readonly Event[]): void {
    for (const row of rows) {
      if (client.closed) return;
      if (client.agentId !== undefined && row.agentId !== client.agentId) continue;
      const id = BigInt(row.id);
      if (id <= client.floor || client.sent.has(row.id)) continue;
      client.sent.add(row.id);
      if (client.sent.size > SENT_MEMORY) client.sent.delete(client.sent.values().next().value!);
      if (id > client.cursor) client.cursor = id;
      this.write(client, `id: ${row.id}\ndata: ${JSON.stringify(this.deps.view(row))}\n\n`);
    }
  }

  private write(client: StreamClient, chunk: string): void {
    if (client.closed || client.res.writableEnded) return;
    client.res.write(chunk);
  }

  private drop(client: StreamClient): void {
    if (client.closed) return;
    client.closed = true;
    clearInterval(client.heartbeat);
    this.clients.delete(client);
  }
}
