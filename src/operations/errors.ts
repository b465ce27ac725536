/**
 * Our own outage, as opposed to a failure of the work: PostgreSQL unreachable, restarting, or out of
 * connections. An attempt that meets one is not spent: the job waits and tries again, and a provision
 * is never rolled back (its servers deleted) because of it.
 */

// SQLSTATE classes and codes that mean "the database is not there right now", not "this query is wrong".
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '53400']);
const CONNECTION_SQLSTATE_CLASS = '08';

// Socket-level failures reported by the pg driver while talking to the server.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

// Messages of the pg driver and pool, and TypeORM's, that carry no code.
const UNAVAILABLE_MESSAGES = [
  /connection terminated/i,
  /timeout exceeded when trying to connect/i,
  /client has encountered a connection error/i,
  /connection is not (?:established|connected)/i,
  /cannot (?:use a pool|execute operation) .*not connected|after calling end on the pool/i,
  /terminating connection due to administrator command/i,
  /the database system is (?:starting up|shutting down|in recovery mode)/i,
];

interface MaybeDbError {
  name?: string;
  code?: unknown;
  message?: string;
  driverError?: unknown;
  cause?: unknown;
}

export function isDatabaseUnavailable(err: unknown): boolean {
  const seen = new Set<unknown>();
  let current: unknown = err;
  // The error itself, then what it wraps (TypeORM's driverError, an Error's cause), a few levels deep.
  const queue: unknown[] = [current];
  while (queue.length > 0 && seen.size < 8) {
    current = queue.shift();
    if (!current || typeof current !== 'object' || seen.has(current)) continue;
    seen.add(current);
    const e = current as MaybeDbError;
    // Errors from the cloud clients are never about our database, whatever their message says.
    if (e.name === 'CloudApiError') return false;
    const code = typeof e.code === 'string' ? e.code : '';
    if (UNAVAILABLE_SQLSTATES.has(code) || (code.length === 5 && code.startsWith(CONNECTION_SQLSTATE_CLASS))) return true;
    // The cloud clients wrap their socket errors in CloudApiError, so a bare one is the database's.
    if (NETWORK_CODES.has(code)) return true;
    if (e.name === 'CannotExecuteNotConnectedError' || e.name === 'ConnectionIsNotSetError') return true;
    if (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.some((re) => re.test(e.message!))) return true;
    queue.push(e.driverError, e.cause);
  }
  return false;
}
