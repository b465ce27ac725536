import type { EventNotice, EventNotifications, EventSubscriber } from './notifications';

/** Statuses after which a wait ends (a failed operation may still be retried by an operator later). */
export const FINAL_OPERATION_STATUSES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * Long polls on operations, all served by the process's one event reader: a waiter reads the
 * operation once after registering (so a change committed between the caller's first read and the
 * registration is not missed), then reads again only when an event says the operation reached a
 * final status, when the listener reconnected (notifications may have been lost), and once more when
 * its time runs out. No waiter polls the database on a timer.
 */
export class OperationWaiter implements EventSubscriber {
  private readonly waiting = new Map<string, Set<() => void>>();
  private closed = false;

  constructor(notifications: Pick<EventNotifications, 'subscribe'>) {
    notifications.subscribe(this);
  }

  /** How many requests wait right now (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const set of this.waiting.values()) n += set.size;
    return n;
  }

  interested(): boolean {
    return this.waiting.size > 0;
  }

  notice(n: EventNotice): void {
    if (n.entityType !== 'operation' || !FINAL_OPERATION_STATUSES.has(n.toStatus)) return;
    for (const wake of this.waiting.get(n.entityId) ?? []) wake();
  }

  resync(): void {
    for (const set of this.waiting.values()) for (const wake of set) wake();
  }

  /** Shutting down: every waiter answers now with what it reads. */
  close(): void {
    this.closed = true;
    this.resync();
  }

  /**
   * Reads the operation until `done` says so or `timeoutMs` has passed (or `signal` aborts), and
   * returns the last read.
   */
  async wait<T>(
    operationId: string,
    timeoutMs: number,
    read: () => Promise<T>,
    done: (value: T) => boolean,
    signal?: AbortSignal,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let woken = false;
    let resolveSleep: (() => void) | undefined;
    const wake = () => {
      woken = true;
      resolveSleep?.();
    };
    let set = this.waiting.get(operationId);
    if (!set) this.waiting.set(operationId, (set = new Set()));
    set.add(wake);
    const onAbort = () => resolveSleep?.();
    signal?.addEventListener('abort', onAbort);
    try {
      let value = await read();
      while (!done(value) && !this.closed && !signal?.aborted) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) break;
        if (!woken) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            resolveSleep = resolve;
            timer = setTimeout(resolve, remaining);
          });
          clearTimeout(timer);
          resolveSleep = undefined;
        }
        woken = false;
        value = await read();
      }
      return value;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      set.delete(wake);
      if (set.size === 0) this.waiting.delete(operationId);
    }
  }
}
