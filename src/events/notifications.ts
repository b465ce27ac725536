import { Client } from 'pg';
import type { Logger } from '../lib/logger';

/**
 * One connection per process that reads every event row written anywhere (API, workers, other
 * processes) as it is committed, and hands it to the process's subscribers: the waiters of
 * GET /v1/operations/:id?wait, the SSE stream and the webhook relay, instead of each polling.
 *
 * It reads the table itself, a few times a second while someone is interested, rather than being
 * told by NOTIFY: PostgreSQL serialises the commits of every transaction that sends a notification
 * (a database-wide lock held through the commit's disk flush), which made each accepted command
 * wait for every other one. Ids come from a sequence and transactions commit out of order, so an
 * id that is skipped over is watched for a while (it may still commit) before it is given up as a
 * rolled-back insert (GAP_TIMEOUT: a transaction that holds an event row uncommitted for longer is
 * not seen live; a reader that resumes from the table, e.g. an SSE client reconnecting, still gets it).
 *
 * After every (re)connect, and when interest comes back after none, subscribers get `resync()`:
 * they re-read what they care about from the table.
 */

export interface EventNotice {
  /** The events row's id (bigint, as a string). */
  id: string;
  entityType: string;
  entityId: string;
  agentId: string | null;
  toStatus: string;
}

export interface EventSubscriber {
  notice(n: EventNotice): void;
  /** Notices may have been missed (the connection was down): re-read. */
  resync(): void;
  /** Whether it wants notices now (default: always); nobody interested, nothing is read. */
  interested?(): boolean;
}

export interface EventNotificationsDeps {
  connectionString: string;
  /** The schema the tables live in, when not the server's default (events from other schemas are ignored). */
  schema?: string;
  logger: Logger;
  /** Delay before the first reconnect; doubles up to 10 s (default 500). */
  reconnectDelayMs?: number;
  applicationName?: string;
  /** How often the table is read while a subscriber is interested (default 50 ms). */
  pollIntervalMs?: number;
  /** How long an id skipped over is watched before it is taken for a rolled-back insert (default 60 s). */
  gapTimeoutMs?: number;
}

interface EventRow {
  id: string;
  entity_type: string;
  entity_id: string;
  agent_id: string | null;
  to_status: string;
}

// Rows read per query; a full page is followed by the next one at once.
const PAGE = 1000;
// Ids watched at most: beyond, the oldest are given up (a resync tells subscribers to re-read).
const MAX_GAPS = 10_000;

export class EventNotifications {
  private client: Client | undefined;
  private readonly subscribers = new Set<EventSubscriber>();
  private closed = false;
  private connected = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private delayMs: number;
  private connecting: Promise<void> | undefined;
  private polling: Promise<void> | undefined;
  /** The highest id read; every id at or below it was read or is in `gaps`. */
  private cursor = 0n;
  /** Ids skipped over, with when to give up on each. */
  private readonly gaps = new Map<bigint, number>();
  /** Whether the last look found a subscriber interested (reading resumes with a resync). */
  private wasInterested = true;

  constructor(private readonly deps: EventNotificationsDeps) {
    this.delayMs = deps.reconnectDelayMs ?? 500;
  }

  /** Whether the connection is up right now. */
  get listening(): boolean {
    return this.connected;
  }

  subscribe(s: EventSubscriber): () => void {
    this.subscribers.add(s);
    return () => this.subscribers.delete(s);
  }

  /**
   * Connects and starts reading. A failure is logged and retried in the background (the API still
   * answers a wait, at its deadline); the promise settles after the first try either way.
   */
  start(): Promise<void> {
    this.connecting ??= this.connect().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.pollTimer);
    await this.connecting?.catch(() => undefined);
    await this.polling?.catch(() => undefined);
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    if (client) await client.end().catch(() => undefined);
  }

  /** Ends the connection as if the server had dropped it (for tests of the reconnect). */
  async dropConnection(): Promise<void> {
    const client = this.client;
    if (client) await client.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new Client({
      connectionString: this.deps.connectionString,
      application_name: this.deps.applicationName ?? 'tailfleet-listener',
      ...(this.deps.schema ? { options: `-c search_path=${this.deps.schema}` } : {}),
      // A dead peer is noticed by TCP keepalive instead of never; a server that does not answer the
      // connect or a read is given up on (and retried) instead of holding the process's start.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: 10_000,
    });
    client.on('error', (err) => {
      this.deps.logger.warn({ err: { message: err.message } }, 'Event listener connection error');
    });
    client.on('end', () => this.onEnd(client));
    try {
      await client.connect();
      // Whatever was written before is the subscribers' to read from the table (resync below).
      const res = await client.query<{ last: string | null }>('SELECT max("id")::text AS last FROM "events"');
      this.cursor = BigInt(res.rows[0]?.last ?? 0);
      this.gaps.clear();
    } catch (err) {
      this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Event listener could not connect; retrying');
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      this.scheduleReconnect();
      return;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.connected = true;
    this.delayMs = this.deps.reconnectDelayMs ?? 500;
    // Whatever happened while no connection read is only in the table.
    this.resyncAll();
    this.schedulePoll(0);
  }

  private onEnd(client: Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    this.connected = false;
    clearTimeout(this.pollTimer);
    if (this.closed) return;
    this.deps.logger.warn('Event listener connection ended; reconnecting');
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, 10_000);
    this.reconnectTimer = setTimeout(() => void this.start(), delay);
    this.reconnectTimer.unref();
  }

  private schedulePoll(ms: number): void {
    if (this.closed || !this.connected) return;
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => {
      this.polling = this.poll().finally(() => {
        this.polling = undefined;
      });
    }, ms);
    this.pollTimer.unref();
  }

  private interested(): boolean {
    for (const s of this.subscribers) if (s.interested?.() ?? true) return true;
    return false;
  }

  private async poll(): Promise<void> {
    const client = this.client;
    if (!client) return;
    const interval = this.deps.pollIntervalMs ?? 50;
    if (!this.interested()) {
      // Nothing is read while nobody listens; what is written meanwhile is theirs to re-read.
      this.wasInterested = false;
      this.schedulePoll(interval);
      return;
    }
    let full = false;
    try {
      if (!this.wasInterested) {
        const res = await client.query<{ last: string | null }>('SELECT max("id")::text AS last FROM "events"');
        this.cursor = BigInt(res.rows[0]?.last ?? 0);
        this.gaps.clear();
        this.wasInterested = true;
        this.resyncAll();
      }
      full = await this.readNew(client);
    } catch (err) {
      // A dropped connection ends it ('end' reconnects and resyncs); anything else is tried again.
      if (this.client === client) this.deps.logger.warn({ err: { message: (err as Error).message } }, 'Could not read new events');
    }
    this.schedulePoll(full ? 0 : interval);
  }

  /** Reads the rows after the cursor and the watched gaps; true when a full page came back. */
  private async readNew(client: Client): Promise<boolean> {
    const now = Date.now();
    for (const [id, until] of this.gaps) if (until <= now) this.gaps.delete(id);
    const gaps = [...this.gaps.keys()].map(String);
    const res = await client.query<EventRow>(
      `SELECT "id"::text AS id, "entity_type" AS entity_type, "entity_id" AS entity_id, "agent_id" AS agent_id, "to_status" AS to_status
       FROM "events" WHERE "id" > $1::bigint OR "id" = ANY($2::bigint[]) ORDER BY "id" LIMIT ${PAGE}`,
      [this.cursor.toString(), gaps],
    );
    const timeout = this.deps.gapTimeoutMs ?? 60_000;
    const notices: EventNotice[] = [];
    for (const row of res.rows) {
      const id = BigInt(row.id);
      if (id <= this.cursor) {
        if (!this.gaps.delete(id)) continue;
      } else {
        // Ids between the cursor and this one are not committed yet, or never will be (a rolled-back
        // insert); a jump wider than the watch list keeps its end.
        const from = id - this.cursor > BigInt(MAX_GAPS) ? id - BigInt(MAX_GAPS) : this.cursor + 1n;
        for (let missing = from; missing < id; missing++) this.gaps.set(missing, now + timeout);
        this.cursor = id;
      }
      notices.push({ id: row.id, entityType: row.entity_type, entityId: row.entity_id, agentId: row.agent_id, toStatus: row.to_status });
    }
    if (this.gaps.size > MAX_GAPS) {
      for (const id of [...this.gaps.keys()].sort((x, y) => (x < y ? -1 : 1)).slice(0, this.gaps.size - MAX_GAPS)) this.gaps.delete(id);
    }
    for (const notice of notices) for (const s of [...this.subscribers]) this.safely(() => s.notice(notice));
    return res.rows.length === PAGE;
  }

  private resyncAll(): void {
    for (const s of [...this.subscribers]) this.safely(() => s.resync());
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.logger.error({ err }, 'Event subscriber threw');
    }
  }
}
