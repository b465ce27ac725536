interface ScheduledEvent {
  at: number;
  seq: number;
  run: (at: number) => void;
}

/**
 * Future state changes, applied lazily: every request first runs the events that are due. The
 * simulator needs no timers for its state machine, so nothing can fire after close(), and effects
 * are stamped with the time they were due rather than the time somebody looked.
 */
export class Scheduler {
  private heap: ScheduledEvent[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  schedule(at: number, run: (at: number) => void): void {
    const ev = { at, seq: this.seq++, run };
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }

  /** Runs every event due at or before `now`, in time order, including ones scheduled by them. */
  runDue(now: number): void {
    const h = this.heap;
    while (h.length > 0 && h[0].at <= now) {
      const ev = this.pop();
      ev.run(ev.at);
    }
  }

  clear(): void {
    this.heap = [];
  }

  private pop(): ScheduledEvent {
    const h = this.heap;
    const top = h[0];
    const last = h.pop() as ScheduledEvent;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l], h[m])) m = l;
        if (r < h.length && before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(a: ScheduledEvent, b: ScheduledEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
