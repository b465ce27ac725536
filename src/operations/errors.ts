/**
 * Our own outage, as opposed to a failure of the work: PostgreSQL unreachable, restarting, or out of
 * connections. An attempt that meets one is not spent: the job waits and tries again, and a provision
 * is never rolled back (its servers deleted) because of it.
 */

// SQLSTATEs that mean "the database is not there right now", not "this query is wrong": 08 connection
// exceptions, 53 insufficient resources, 57P0x operator intervention (shutdown, cannot connect now).
const UNAVAILABLE_SQLSTATE = /^(?:08|53)[0-9A-Z]{3}$|^57P0[0-9A-Z]$/;

// Socket-level failures reported by the pg driver while talking to the server.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);

// Messages of the pg driver and pool, and TypeORM's, that carry no code.
const UNAVAILABLE_MESSAGES = [
  /connection terminated/i,
  /timeout exceeded when trying to connect/i,
  /client has encountered a connection error/i,
  /connection is not (?:established|connected)/i,
  /cannot (?:use a pool|execute operation) .*not connected|after calling end on the pool/i,
  /terminating connection due to administrator command/i,
  /the database system is (?:starting up|shutting down|in recovery mode)/i,
  // TypeORM before the DataSource is initialized, or after it was destroyed (shutdown in progress).
  /DataSource is not initialized/i,
];

interface MaybeDbError {
  name?: string;
  code?: unknown;
  message?: string;
  driverError?: unknown;
  cause?: unknown;
  /** An AggregateError's (Node reports a refused dual-stack connect as one, of the per-address failures). */
  errors?: unknown;
}

/** Whether an error means PostgreSQL cannot be reached right now (as opposed to a bug in a query). */
export function isDatabaseUnavailable(err: unknown): boolean {
  const seen = new Set<unknown>();
  let current: unknown = err;
  // The error itself, then what it wraps (TypeORM's driverError, an Error's cause, an
  // AggregateError's errors), a few levels deep.
  const queue: unknown[] = [current];
  while (queue.length > 0 && seen.size < 8) {
    current = queue.shift();
    if (!current || typeof current !== 'object' || seen.has(current)) continue;
    seen.add(current);
    const e = current as MaybeDbError;
    // Errors from the cloud clients are never about our database, whatever their message says.
    if (e.name === 'CloudApiError') return false;
    const code = typeof e.code === 'string' ? e.code : '';
    if (UNAVAILABLE_SQLSTATE.test(code)) return true;
    // The cloud clients wrap their socket errors in CloudApiError, so a bare one is the database's.
    if (NETWORK_CODES.has(code)) return true;
    if (e.name === 'CannotExecuteNotConnectedError' || e.name === 'ConnectionIsNotSetError') return true;
    if (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.some((re) => re.test(e.message!))) return true;
    queue.push(e.driverError, e.cause, ...(Array.isArray(e.errors) ? (e.errors as unknown[]) : []));
  }
  return false;
}
