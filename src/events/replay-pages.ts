import type { Event } from '../entities';

/**
 * The pages an event-stream replay reads, each serialised once and kept a little while for the other
 * clients replaying the same stretch of history (many clients reconnecting at once resume from the
 * same ids): one read and one serialisation serve them all, where a read per client would make as
 * many copies of the rows. Reads go to the database at most `concurrency` at a time, so clients
 * catching up never take every connection of the pool.
 *
 * A kept page only serves a client that registered for live events before the page's read began:
 * every row committed before that client registered is then in the page, and every later one
 * reaches it live. A client that registered after the read reads again.
 */

export interface ReplayPage {
  /** The rows' ids, in order (empty at the end of the table). */
  ids: string[];
  /** The rows as SSE messages, one after the other. */
  text: string;
  bytes: number;
  /** Fewer rows than a page: the end of the table, for now. */
  last: boolean;
}

export interface ReplayPagesDeps {
  read(afterId: string, opts: { agentId?: string; limit: number }): Promise<Event[]>;
  /** One row as an SSE message. */
  frame(row: Event): string;
  /** Rows per page. */
  limit: number;
  /** Reads running at once (default 2). */
  concurrency?: number;
  /** Pages kept for other clients (default 64: about 1 MiB of ordinary events). */
  keep?: number;
}

interface Kept {
  /** The mark taken when the read was asked for. */
  readAt: number;
  page: Promise<ReplayPage>;
}

export class ReplayPages {
  private marks = 0;
  private readonly kept = new Map<string, Kept>();
  private slots: number;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly deps: ReplayPagesDeps) {
    this.slots = deps.concurrency ?? 2;
  }

  /** A point in time to compare reads with: take one when a client registers for live events. */
  mark(): number {
    return ++this.marks;
  }

  /** The page after `afterId`, kept or read, for a client that registered at `registeredAt`. */
  get(afterId: string, opts: { agentId?: string; registeredAt: number }): Promise<ReplayPage> {
    const key = `${opts.agentId ?? '*'}>${afterId}`;
    const kept = this.kept.get(key);
    if (kept && kept.readAt > opts.registeredAt) {
      // Most recently used last: the oldest goes first.
      this.kept.delete(key);
      this.kept.set(key, kept);
      return kept.page;
    }
    const entry: Kept = { readAt: this.mark(), page: this.read(afterId, opts.agentId) };
    this.kept.set(key, entry);
    while (this.kept.size > (this.deps.keep ?? 64)) this.kept.delete(this.kept.keys().next().value!);
    entry.page.catch(() => {
      if (this.kept.get(key) === entry) this.kept.delete(key);
    });
    return entry.page;
  }

  private async read(afterId: string, agentId: string | undefined): Promise<ReplayPage> {
    if (this.slots > 0) this.slots--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let rows: Event[];
    try {
      rows = await this.deps.read(afterId, { agentId, limit: this.deps.limit });
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.slots++;
    }
    const last = rows.length < this.deps.limit;
    if (!last) rows = aligned(rows, this.deps.limit);
    const text = rows.map((row) => this.deps.frame(row)).join('');
    return { ids: rows.map((row) => row.id), text, bytes: Buffer.byteLength(text), last };
  }
}

/**
 * A full page cut after its last id that is a multiple of the page size, when it holds one: clients
 * that started from different ids then ask for the same pages from their second page on (ids are
 * dense), and share them. A page without such an id (an agent's sparse events) stays whole.
 */
function aligned(rows: Event[], limit: number): Event[] {
  const step = BigInt(limit);
  for (let i = rows.length - 1; i >= 0; i--) {
    if (BigInt(rows[i]!.id) % step === 0n) return rows.slice(0, i + 1);
  }
  return rows;
}
