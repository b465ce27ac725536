/**
 * How many long-lived requests (event streams, long polls) may be open at once, in total and per
 * holder (an API token). Each one holds a socket and some memory for as long as the client likes, so
 * without a cap a handful of clients could exhaust the process; with it, one token cannot take the
 * slots of the others either.
 */

export interface ConcurrencyLimits {
  total: number;
  perHolder: number;
}

/** Which of the two caps refused a request. */
export type LimitReached = 'total' | 'per-holder';

export type Admission = { release: () => void } | { refused: LimitReached; limit: number };

export class ConcurrencyLimit {
  private readonly held = new Map<string, number>();
  private count = 0;

  constructor(readonly limits: ConcurrencyLimits) {}

  /** Slots held right now, in total or by one holder. */
  size(holder?: string): number {
    return holder === undefined ? this.count : (this.held.get(holder) ?? 0);
  }

  /**
   * Takes a slot for `holder`, or says which cap is reached. `release` gives the slot back; calling
   * it again does nothing, so it can be bound to every way a request ends.
   */
  acquire(holder: string): Admission {
    const mine = this.held.get(holder) ?? 0;
    if (mine >= this.limits.perHolder) return { refused: 'per-holder', limit: this.limits.perHolder };
    if (this.count >= this.limits.total) return { refused: 'total', limit: this.limits.total };
    this.held.set(holder, mine + 1);
    this.count++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.count--;
        const left = (this.held.get(holder) ?? 1) - 1;
        if (left > 0) this.held.set(holder, left);
        else this.held.delete(holder);
      },
    };
  }
}
