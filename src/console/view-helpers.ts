/** Formatting the templates share (passed to every view as `h`). */

const STATUS_TONE: Record<string, string> = {
  active: 'ok',
  running: 'ok',
  succeeded: 'ok',
  resolved: 'ok',
  paused: 'idle',
  stopped: 'idle',
  hibernated: 'idle',
  draft: 'busy',
  provisioning: 'busy',
  queued: 'busy',
  pending: 'busy',
  stopping: 'busy',
  starting: 'busy',
  hibernating: 'busy',
  waking: 'busy',
  destroying: 'busy',
  error: 'bad',
  failed: 'bad',
  open: 'bad',
  cancelled: 'idle',
  destroyed: 'idle',
};

export interface TimelineEntry {
  at: string;
  kind: 'event' | 'operation';
  subject: string;
  change: string;
  actor: string;
  reason: string;
  step: string | null;
}

export const helpers = {
  tone(status: string | null | undefined): string {
    return `status status-${STATUS_TONE[status ?? ''] ?? 'idle'}`;
  },
  time(value: string | null | undefined): string {
    if (!value) return '–';
    return value.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  },
  money(amount: number | null | undefined, currency: string | null | undefined): string {
    if (amount === null || amount === undefined) return '–';
    return `${amount.toFixed(2)} ${currency ?? ''}`.trim();
  },
  labels(labels: Record<string, string> | null | undefined): string {
    const entries = Object.entries(labels ?? {});
    return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(', ') : '–';
  },
  /** An actor as people read it: the token's name without its id. */
  actor(actor: string | null | undefined): string {
    if (!actor) return '–';
    const m = /^token:(.+)#[0-9a-f-]{36}$/.exec(actor);
    return m ? `token ${m[1]}` : actor;
  },
  json(value: unknown): string {
    // Inside <script type="application/json">: nothing may close the element or open a comment.
    return JSON.stringify(value).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  },
  /** Events and operations of an agent, newest first: who did what, why, and at which step. */
  timeline(events: any[], operations: any[]): TimelineEntry[] {
    const entries: TimelineEntry[] = [
      ...events.map((e) => ({
        at: e.at as string,
        kind: 'event' as const,
        subject: e.entityType === 'agent' ? 'agent' : `${String(e.entityType).replace('_', ' ')} ${String(e.entityId).slice(0, 8)}`,
        change: `${e.fromStatus ?? '·'} → ${e.toStatus}`,
        actor: e.actor as string,
        reason: e.reason as string,
        step: null,
      })),
      ...operations.map((o) => ({
        at: o.requestedAt as string,
        kind: 'operation' as const,
        subject: `${o.type} ${String(o.id).slice(0, 8)}`,
        change: o.status as string,
        actor: o.requestedBy as string,
        reason: o.error ? `error: ${o.error}` : `${o.type} requested`,
        step: (o.failedStep ?? o.currentStep ?? null) as string | null,
      })),
    ];
    return entries.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  },
};
