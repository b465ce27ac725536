import { Client, type Notification } from 'pg';
import type { Logger } from '../lib/logger';

/**
 * One LISTEN connection per process for every event row written anywhere (API, workers, other
 * processes). The trigger on `events` (see the webhooks migration) NOTIFYs at commit with a small
 * payload; the waiters of GET /v1/operations/:id?wait and the SSE stream subscribe here instead of
 * polling the database each.
 *
 * Notifications sent while the connection is down are lost, so after every (re)connect subscribers
 * get `resync()`: they re-read what they care about from the table.
 */

export const EVENTS_CHANNEL = 'tailfleet_events';

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
  /** Notifications may have been missed (the connection was down): re-read. */
  resync(): void;
}

export interface EventNotificationsDeps {
  connectionString: string;
  /** The schema the tables live in, when not the server's default (events from other schemas are ignored). */
  schema?: string;
  logger: Logger;
  /** Delay before the first reconnect; doubles up to 10 s (default 500). */
  reconnectDelayMs?: number;
  applicationName?: string;
}

export class EventNotifications {
  private client: Client | undefined;
  private readonly subscribers = new Set<EventSubscriber>();
  private schema: string | undefined;
  private closed = false;
  private connected = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private delayMs: number;
  private connecting: Promise<void> | undefined;

  constructor(private readonly deps: EventNotificationsDeps) {
    this.delayMs = deps.reconnectDelayMs ?? 500;
    this.schema = deps.schema;
  }

  /** Whether the LISTEN connection is up right now. */
  get listening(): boolean {
    return this.connected;
  }

  subscribe(s: EventSubscriber): () => void {
    this.subscribers.add(s);
    return () => this.subscribers.delete(s);
  }

  /**
   * Connects and listens. A failure is logged and retried in the background (the API still answers
   * a wait, at its deadline); the promise settles after the first try either way.
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
    await this.connecting?.catch(() => undefined);
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
      // connect or the LISTEN is given up on (and retried) instead of holding the process's start.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: 10_000,
    });
    client.on('notification', (msg) => this.onNotification(msg));
    client.on('error', (err) => {
      this.deps.logger.warn({ err: { message: err.message } }, 'Event listener connection error');
    });
    client.on('end', () => this.onEnd(client));
    try {
      await client.connect();
      if (!this.schema) {
        const res = await client.query<{ schema: string }>('SELECT current_schema() AS schema');
        this.schema = res.rows[0]?.schema ?? 'public';
      }
      await client.query(`LISTEN ${EVENTS_CHANNEL}`);
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
    // Whatever happened while no connection listened is only in the table.
    for (const s of [...this.subscribers]) this.safely(() => s.resync());
  }

  private onEnd(client: Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    this.connected = false;
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

  private onNotification(msg: Notification): void {
    if (msg.channel !== EVENTS_CHANNEL || !msg.payload) return;
    let parsed: EventNotice & { schema?: string };
    try {
      parsed = JSON.parse(msg.payload) as EventNotice & { schema?: string };
    } catch {
      return;
    }
    if (parsed.schema !== undefined && parsed.schema !== this.schema) return;
    const notice: EventNotice = {
      id: String(parsed.id),
      entityType: parsed.entityType,
      entityId: parsed.entityId,
      agentId: parsed.agentId ?? null,
      toStatus: parsed.toStatus,
    };
    for (const s of [...this.subscribers]) this.safely(() => s.notice(notice));
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.logger.error({ err }, 'Event subscriber threw');
    }
  }
}
