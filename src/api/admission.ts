import type { Response } from 'express';
import type { ConcurrencyLimit } from '../events/concurrency-limit';
import { principalOf } from './auth';
import { HttpProblem } from './problem';

// A slot frees when any client of the token (or any at all) goes away; a few seconds is a fair wait.
const RETRY_AFTER_SECONDS = 5;

/**
 * Takes a slot of `limit` for the request's token until the returned release is called, or refuses
 * with 429 naming the cap that was reached. `what` names the requests in the answer ("event streams").
 */
export function admit(limit: ConcurrencyLimit, res: Response, what: string): () => void {
  const principal = principalOf(res);
  if (!principal) throw new Error('admit() called on a request that was not authenticated');
  // Named tokens by row (a renamed or re-created name is another token); the bootstrap token and board logins by name.
  const holder = principal.tokenId ?? `name:${principal.name}`;
  const admission = limit.acquire(holder);
  if ('release' in admission) return admission.release;
  const { refused, limit: max } = admission;
  throw new HttpProblem(
    'too-many-requests',
    refused === 'per-holder'
      ? `The token "${principal.name}" already has ${max} ${what} open; close one or retry later.`
      : `The server already serves ${max} ${what}; retry later.`,
    { limit: max, limitScope: refused === 'per-holder' ? 'token' : 'server', headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } },
  );
}
