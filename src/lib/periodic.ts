/**
 * A pass that runs every interval in the background (the outbox relay, the webhook relay): one pass
 * at a time (callers during a pass share it), the next one an interval after the last ended, a
 * failed pass handed to `onError` and tried again next interval, and `close` waits for the pass
 * under way. The timer never keeps the process alive.
 */
export interface PeriodicPassOptions<T> {
  pass: () => Promise<T>;
  intervalMs: number;
  /** A background pass (not runOnce's caller's) that ended well. */
  onResult?: (result: T) => void;
  /** A background pass that threw. */
  onError: (err: unknown) => void;
}

export class PeriodicPass<T> {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<T> | undefined;
  private again = false;
  private closed = false;

  constructor(private readonly opts: PeriodicPassOptions<T>) {}

  /** A pass now, then one every interval. */
  start(): void {
    const tick = () => {
      if (this.closed) return;
      void this.runSafely().finally(() => {
        if (this.closed) return;
        this.timer = setTimeout(tick, this.opts.intervalMs);
        this.timer.unref();
      });
    };
    tick();
  }

  /** A pass soon: now, or one more after the running one. */
  nudge(): void {
    if (this.closed) return;
    if (this.running) this.again = true;
    else void this.runSafely();
  }

  /** One pass (concurrent callers share it). */
  runOnce(): Promise<T> {
    this.running ??= this.opts.pass().finally(() => {
      this.running = undefined;
      if (this.again && !this.closed) {
        this.again = false;
        void this.runSafely();
      }
    });
    return this.running;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  private async runSafely(): Promise<void> {
    try {
      const result = await this.runOnce();
      this.opts.onResult?.(result);
    } catch (err) {
      this.opts.onError(err);
    }
  }
}
