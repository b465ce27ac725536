import type { DataSource } from 'typeorm';
import { runMigrations } from '../db';
import type { Logger } from '../lib/logger';
import { sleep } from '../lib/time';
import { isDatabaseUnavailable } from '../operations/errors';

/**
 * How long a starting process waits for PostgreSQL that cannot be reached (restarting, failing over,
 * or dropping connections) before it gives up and exits: a deploy and a database blip that meet must
 * not leave a fleet without its workers.
 */
export const DATABASE_STARTUP_WAIT_MS = 60_000;

/**
 * Connects the data source and applies pending migrations, again from where it stopped while the
 * database is unreachable (each migration is its own transaction, and the migration lock is released
 * with the connection that held it), until `waitMs` has passed. Any other error is thrown at once.
 */
export async function openDatabase(
  dataSource: DataSource,
  opts: { migrate: boolean; logger: Logger; waitMs?: number },
): Promise<void> {
  const deadline = Date.now() + (opts.waitMs ?? DATABASE_STARTUP_WAIT_MS);
  for (let attempt = 1; ; attempt++) {
    try {
      if (!dataSource.isInitialized) await dataSource.initialize();
      if (opts.migrate) {
        const { applied } = await runMigrations(dataSource);
        if (applied.length > 0) opts.logger.info({ applied }, 'Database migrations applied');
      }
      return;
    } catch (err) {
      const left = deadline - Date.now();
      if (!isDatabaseUnavailable(err) || left <= 0) throw err;
      const waitMs = Math.min(left, 2_000, 100 * 2 ** (attempt - 1));
      opts.logger.warn({ err, attempt, waitMs }, 'PostgreSQL cannot be reached yet; trying again');
      await sleep(waitMs);
    }
  }
}
