import type { Agent, Instance } from '../entities';
import { sleep } from '../lib/time';
import { cannotBecomeReady, isReady } from './ready';

// Readiness comes from a report (no event is written for it), so it is read again at this pace.
const POLL_MS = 250;

/**
 * Reads the agent until it is `ready`, until it cannot become ready (destroyed, in error, its
 * bootstrap failed), until `timeoutMs` has passed or `signal` aborts; answers the last read. For
 * GET /v1/agents/{id}?wait=ready and for whatever hands out agents (a pool's claim) and must wait
 * for one to be ready.
 */
export async function waitUntilReady<T extends { agent: Agent; instance: Instance | null }>(
  read: () => Promise<T>,
  opts: { timeoutMs: number; signal?: AbortSignal; pollMs?: number },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const current = await read();
    if (isReady(current.agent, current.instance) || cannotBecomeReady(current.agent)) return current;
    const left = deadline - Date.now();
    if (left <= 0 || opts.signal?.aborted) return current;
    await sleep(Math.min(opts.pollMs ?? POLL_MS, left));
  }
}
