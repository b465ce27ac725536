import type { DataSource } from 'typeorm';
import { sleep } from '../lib/time';

// How often a waiting caller asks for the lock again.
const RETRY_MS = 200;

/**
 * Runs `work` holding a PostgreSQL session advisory lock, on a connection of its own for the
 * duration, so that one process at a time does it (the outbox relay, a reconcile pass). When another
 * session holds the lock for longer than `waitMs` (default 0: ask once), `work` is not run and the
 * answer is `{ locked: false }`. The lock is released however `work` ends.
 */
export async function withAdvisoryLock<T>(
  dataSource: DataSource,
  key: number,
  work: () => Promise<T>,
  opts: { waitMs?: number } = {},
): Promise<{ locked: true; value: T } | { locked: false }> {
  const runner = dataSource.createQueryRunner();
  const connection = (await runner.connect()) as { on?: (e: 'error', f: () => void) => void; removeListener?: (e: 'error', f: () => void) => void };
  // The connection sits checked out and idle while `work` runs on others. pg's pool listens for
  // errors only on idle connections in the pool: a session ended under this one (a restart, an
  // administrator's terminate) would emit an 'error' nobody handles and bring the process down.
  // The lock goes with the session; the unlock below then fails quietly.
  const ignore = () => undefined;
  connection.on?.('error', ignore);
  try {
    const deadline = Date.now() + (opts.waitMs ?? 0);
    for (;;) {
      const [row] = (await runner.query('SELECT pg_try_advisory_lock($1) AS locked', [key])) as Array<{ locked: boolean }>;
      if (row?.locked) break;
      if (Date.now() >= deadline) return { locked: false };
      await sleep(RETRY_MS);
    }
    try {
      return { locked: true, value: await work() };
    } finally {
      await runner.query('SELECT pg_advisory_unlock($1)', [key]).catch(() => undefined);
    }
  } finally {
    connection.removeListener?.('error', ignore);
    await runner.release();
  }
}
