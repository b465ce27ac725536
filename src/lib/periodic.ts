/**
 * A pass that runs every interval in the background (the outbox relay, the webhook relay): one pass
 * at a time (callers during a pass share it), the next one an interval after the last ended, a
 * failed pass handed to `passFailed` and tried again next interval, and `close` waits for the pass
 * under way. The timer never keeps the process alive.
 */
export abstract class PeriodicPass<T> {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<T> | undefined;
  private again = false;
  private closed = false;

  constructor(private readonly intervalMs: number) {}

  /** The work of one pass. */
  protected abstract pass(): Promise<T>;

  /** A background pass threw (runOnce's callers get the error themselves). */
  protected abstract passFailed(err: unknown): void;

  /** A background pass ended well. */
  protected passEnded(_result: T): void {}

  /** A pass now, then one every interval. */
  start(): void {
    const tick = () => {
      if (this.closed) return;
      void this.runSafely().finally(() => {
        if (this.closed) return;
        this.timer = setTimeout(tick, this.intervalMs);
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
    this.running ??= this.pass().finally(() => {
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
      this.passEnded(await this.runOnce());
    } catch (err) {
      this.passFailed(err);
    }
  }
}
