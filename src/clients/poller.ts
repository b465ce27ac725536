import type { ClientLogger } from './http';

/** What a waiter makes of the latest value: finished (with a result), or keep waiting. */
export type PollVerdict<R> = { done: true; value: R } | { done: false };

export const KEEP_WAITING: PollVerdict<never> = { done: false };

interface Waiter<V> {
  deadline: number;
  /** May throw to reject the waiter (e.g. an action that ended in `error`). */
  evaluate(value: V): PollVerdict<unknown>;
  timeoutError(): Error;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/**
 * Per key: the latest value, or an Error when that key's lookup failed. A key missing from the
 * map had no news this round and keeps waiting.
 */
export type BatchFetch<K, V> = (keys: K[]) => Promise<Map<K, V | Error>>;

export interface BatchPollerOptions<K, V> {
  intervalMs: number;
  fetch: BatchFetch<K, V>;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  logger?: ClientLogger;
}

/**
 * Lets any number of concurrent waits share one polling loop: every interval, the keys of all
 * pending waiters go to one `fetch` (which batches them into as few requests as the API allows),
 * and each waiter is settled from the result. The loop runs only while someone waits.
 */
export class BatchPoller<K, V> {
  private readonly waiters = new Map<K, Set<Waiter<V>>>();
  private running = false;
  private readonly opts: BatchPollerOptions<K, V>;

  constructor(opts: BatchPollerOptions<K, V>) {
    this.opts = opts;
  }

  get pending(): number {
    let n = 0;
    for (const set of this.waiters.values()) n += set.size;
    return n;
  }

  wait<R>(
    key: K,
    o: { timeoutMs: number; evaluate: (value: V) => PollVerdict<R>; timeoutError: () => Error },
  ): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const waiter: Waiter<V> = {
        deadline: this.opts.now() + o.timeoutMs,
        evaluate: o.evaluate,
        timeoutError: o.timeoutError,
        resolve: resolve as (value: unknown) => void,
        reject,
      };
      let set = this.waiters.get(key);
      if (!set) this.waiters.set(key, (set = new Set()));
      set.add(waiter);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      let lastPollAt = this.opts.now();
      while (this.waiters.size > 0) {
        // Fixed rate: the time a poll took counts toward the interval, so it stays one poll per interval.
        await this.opts.sleep(Math.max(0, lastPollAt + this.opts.intervalMs - this.opts.now()));
        lastPollAt = this.opts.now();
        this.expire();
        if (this.waiters.size === 0) break;
        const keys = [...this.waiters.keys()];
        let results: Map<K, V | Error>;
        try {
          results = await this.opts.fetch(keys);
        } catch (err) {
          results = new Map(keys.map((k) => [k, err instanceof Error ? err : new Error(String(err))]));
        }
        for (const [key, value] of results) this.settle(key, value);
        this.expire();
      }
    } catch (err) {
      // Only reachable if sleep itself fails; never leave waiters hanging.
      this.opts.logger?.error({ err }, 'Shared poller stopped');
      for (const key of [...this.waiters.keys()]) this.settle(key, err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.running = false;
    }
  }

  private settle(key: K, value: V | Error): void {
    const set = this.waiters.get(key);
    if (!set) return;
    for (const waiter of [...set]) {
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
      }
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
 * Collects the keys asked for in the same synchronous run and looks them up with one
 * `fetch`, so a burst of callers (e.g. 100 stops started together) costs one batched read.
 */
export class ReadCoalescer<K, V> {
  private pending = new Map<K, Array<{ resolve: (v: V) => void; reject: (e: unknown) => void }>>();
  private scheduled = false;

  constructor(private readonly fetch: BatchFetch<K, V>) {}

  get(key: K): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      let list = this.pending.get(key);
      if (!list) this.pending.set(key, (list = []));
      list.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // A microtask rather than a timer: it batches every caller of the current synchronous run and
        // keeps working under fake timers.
        queueMicrotask(() => void this.flush());
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
