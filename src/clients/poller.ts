import type { ClientLogger } from './http';

/** What a waiter makes of the latest value: finished (with a result), or keep waiting. */
export type PollVerdict<R> = { done: true; value: R } | { done: false };

export const KEEP_WAITING: PollVerdict<never> = { done: false };

interface Waiter<V> {
  deadline: number;
  /** When this waiter next needs a look. */
  dueAt: number;
  /** The time between its looks, grown by `backoff` after each look that did not finish it. */
  stepMs: number;
  backoff?: Backoff;
  /** May throw to reject the waiter (e.g. an action that ended in `error`). */
  evaluate(value: V): PollVerdict<unknown>;
  timeoutError(): Error;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/**
 * Per key: the latest value, or an Error when that key's lookup failed. A key missing from the
 * map had no news this round and keeps waiting. The map may carry keys that were not asked for
 * (a listing answers for everything it lists): their waiters are settled too.
 */
export type BatchFetch<K, V> = (keys: K[]) => Promise<Map<K, V | Error>>;

export interface BatchPollerOptions<K, V> {
  intervalMs: number;
  fetch: BatchFetch<K, V>;
  /**
   * Requests a round for this many keys costs. Given, rounds are spaced so that the poll spends
   * about one request per interval (a round of two requests is followed by two quiet intervals),
   * but never more than MAX_SPACING intervals apart.
   */
  cost?: (keys: number) => number;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  logger?: ClientLogger;
}

/** Looks that grow apart: for waits that take long and do not need to be seen the moment they end. */
export interface Backoff {
  factor: number;
  maxIntervalMs: number;
}

export interface WaitOptions<V, R> {
  timeoutMs: number;
  evaluate: (value: V) => PollVerdict<R>;
  timeoutError: () => Error;
  /**
   * Look at once rather than an interval from now: the caller has no reason to think the value is
   * about to change (a read before acting). Still never more than one round per interval.
   */
  immediate?: boolean;
  backoff?: Backoff;
}

/** The most intervals a costly round may push the next one back. */
const MAX_SPACING = 4;

/**
 * The one polling loop of the clients: any number of concurrent waits (and reads) share it. A
 * round runs when some waiter is due, at most one per interval and only while someone waits; the
 * keys of the waiters due then go to one `fetch` (which batches them into as few requests as the
 * API allows), and every waiter its answer covers is settled from it. A waiter is settled only
 * from a round that started after it began waiting, so nobody is answered with a value read before
 * it asked.
 */
export class BatchPoller<K, V> {
  private readonly waiters = new Map<K, Set<Waiter<V>>>();
  private running = false;
  private lastPollAt = Number.NEGATIVE_INFINITY;
  /** The least time from the last round to the next. */
  private spacingMs: number;
  private wake?: () => void;
  private readonly opts: BatchPollerOptions<K, V>;

  constructor(opts: BatchPollerOptions<K, V>) {
    this.opts = opts;
    this.spacingMs = opts.intervalMs;
  }

  get pending(): number {
    let n = 0;
    for (const set of this.waiters.values()) n += set.size;
    return n;
  }

  wait<R>(key: K, o: WaitOptions<V, R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const now = this.opts.now();
      const { intervalMs } = this.opts;
      const waiter: Waiter<V> = {
        deadline: now + o.timeoutMs,
        dueAt: o.immediate ? now : now + intervalMs,
        stepMs: intervalMs,
        backoff: o.backoff,
        evaluate: o.evaluate,
        timeoutError: o.timeoutError,
        resolve: resolve as (value: unknown) => void,
        reject,
      };
      let set = this.waiters.get(key);
      if (!set) this.waiters.set(key, (set = new Set()));
      set.add(waiter);
      if (!this.running) void this.run();
      else this.wake?.();
    });
  }

  /** The key's value from the next round (at once when no round ran within the interval). */
  read(key: K, o: { timeoutMs: number; timeoutError: () => Error }): Promise<V> {
    return this.wait(key, { ...o, immediate: true, evaluate: (value) => ({ done: true, value }) });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiters.size > 0) {
        await this.sleepUntilDue();
        this.expire();
        const startedAt = this.opts.now();
        // Woken for a deadline only: no round before the spacing is up.
        if (startedAt < this.lastPollAt + this.spacingMs) continue;
        // No round can follow within the interval: whoever falls due by then is looked at now rather
        // than costing a round of its own.
        const due = this.dueKeys(startedAt + this.spacingMs);
        if (due.length === 0) continue;
        this.lastPollAt = startedAt;
        const cost = this.opts.cost?.(due.length) ?? 1;
        this.spacingMs = this.opts.intervalMs * Math.min(MAX_SPACING, Math.max(1, cost));
        // Those waiting now are answered by this round; whoever comes while it runs waits for the next.
        const asked = new Map([...this.waiters].map(([key, set]) => [key, [...set]]));
        let results: Map<K, V | Error>;
        try {
          results = await this.opts.fetch(due);
        } catch (err) {
          results = new Map(due.map((k) => [k, err instanceof Error ? err : new Error(String(err))]));
        }
        for (const [key, value] of results) {
          const waiters = asked.get(key);
          if (waiters) this.settle(key, waiters, value, startedAt);
        }
        this.expire();
      }
    } catch (err) {
      // Only reachable if sleep itself fails; never leave waiters hanging.
      this.opts.logger?.error({ err }, 'Shared poller stopped');
      const error = err instanceof Error ? err : new Error(String(err));
      for (const [key, set] of [...this.waiters]) this.settle(key, [...set], error, this.opts.now());
    } finally {
      this.running = false;
    }
  }

  private dueKeys(by: number): K[] {
    const keys: K[] = [];
    for (const [key, set] of this.waiters) if ([...set].some((w) => w.dueAt <= by)) keys.push(key);
    return keys;
  }

  /**
   * Sleeps until the next round may run (one interval after the last) and someone is due, or a
   * deadline passes; a waiter arriving meanwhile wakes it to look again.
   */
  private async sleepUntilDue(): Promise<void> {
    for (;;) {
      if (this.waiters.size === 0) return;
      let due = Number.POSITIVE_INFINITY;
      let deadline = Number.POSITIVE_INFINITY;
      for (const set of this.waiters.values()) {
        for (const w of set) {
          due = Math.min(due, w.dueAt);
          deadline = Math.min(deadline, w.deadline);
        }
      }
      const at = Math.min(Math.max(due, this.lastPollAt + this.spacingMs), deadline);
      const wait = at - this.opts.now();
      if (wait <= 0) {
        // Let every caller of the current synchronous run join this round.
        await Promise.resolve();
        return;
      }
      const woken = new Promise<void>((resolve) => (this.wake = resolve));
      await Promise.race([this.opts.sleep(wait), woken]);
      this.wake = undefined;
    }
  }

  private settle(key: K, waiters: Waiter<V>[], value: V | Error, roundAt: number): void {
    for (const waiter of waiters) {
      if (!this.waiters.get(key)?.has(waiter)) continue;
      if (value instanceof Error) {
        this.remove(key, waiter);
        waiter.reject(value);
        continue;
      }
      let verdict: PollVerdict<unknown>;
      try {
        verdict = waiter.evaluate(value);
      } catch (err) {
        this.remove(key, waiter);
        waiter.reject(err);
        continue;
      }
      if (verdict.done) {
        this.remove(key, waiter);
        waiter.resolve(verdict.value);
        continue;
      }
      if (waiter.backoff) waiter.stepMs = Math.min(waiter.backoff.maxIntervalMs, waiter.stepMs * waiter.backoff.factor);
      waiter.dueAt = roundAt + waiter.stepMs;
    }
  }

  private expire(): void {
    const now = this.opts.now();
    for (const [key, set] of [...this.waiters]) {
      for (const waiter of [...set]) {
        if (now >= waiter.deadline) {
          this.remove(key, waiter);
          waiter.reject(waiter.timeoutError());
        }
      }
    }
  }

  private remove(key: K, waiter: Waiter<V>): void {
    const set = this.waiters.get(key);
    if (!set) return;
    set.delete(waiter);
    if (set.size === 0) this.waiters.delete(key);
  }
}

/**
 * Collects the keys asked for together and looks them up with one `fetch`, so a burst of callers
 * costs one batched read. Together means the same synchronous run, or with `windowMs` every call
 * within that window after the first. A fetch starts after every call it answers: a caller that
 * comes while one is under way waits for the next, so it never gets a value read before it asked
 * (what a confirmation after a delete needs).
 */
export class ReadCoalescer<K, V> {
  private pending = new Map<K, Array<{ resolve: (v: V) => void; reject: (e: unknown) => void }>>();
  private scheduled = false;

  constructor(
    private readonly fetch: BatchFetch<K, V>,
    private readonly window?: { windowMs: number; sleep: (ms: number) => Promise<void> },
  ) {}

  get(key: K): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      let list = this.pending.get(key);
      if (!list) this.pending.set(key, (list = []));
      list.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        if (this.window && this.window.windowMs > 0) {
          void this.window.sleep(this.window.windowMs).then(
            () => this.flush(),
            () => this.flush(),
          );
        } else {
          // A microtask rather than a timer: it batches every caller of the current synchronous run and
          // keeps working under fake timers.
          queueMicrotask(() => void this.flush());
        }
      }
    });
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    this.scheduled = false;
    let results: Map<K, V | Error>;
    try {
      results = await this.fetch([...batch.keys()]);
    } catch (err) {
      results = new Map([...batch.keys()].map((k) => [k, err instanceof Error ? err : new Error(String(err))]));
    }
    for (const [key, callers] of batch) {
      const value = results.get(key);
      for (const c of callers) {
        if (value === undefined) c.reject(new Error('batched read returned nothing for this key'));
        else if (value instanceof Error) c.reject(value);
        else c.resolve(value);
      }
    }
  }
}
