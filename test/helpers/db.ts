import type { DataSource } from 'typeorm';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../../src/db/admin';
import { createDataSource } from '../../src/db/data-source';
import { runMigrations } from '../../src/db/migrate';

export const ADMIN_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  /** Initialised, migrated, ready to use. */
  dataSource: DataSource;
  url: string;
  name: string;
  /** Closes the pool and drops the database (connections still open are terminated). */
  drop(): Promise<void>;
}

/**
 * A fresh database `tf_<label>_<random>` with every migration applied. Create one per suite in
 * `before` and drop it in `after`; between tests use truncateAll (far cheaper than a new database).
 */
export async function createTestDatabase(label: string, options: { poolSize?: number } = {}): Promise<TestDatabase> {
  const name = scratchDatabaseName(label);
  const url = await createDatabase(ADMIN_DATABASE_URL, name);
  const dataSource = createDataSource({ url, poolSize: options.poolSize ?? 5, applicationName: `tailfleet-test-${label}` });
  let dropped = false;
  const drop = async () => {
    if (dropped) return;
    dropped = true;
    if (dataSource.isInitialized) await dataSource.destroy().catch(() => undefined);
    await dropDatabase(ADMIN_DATABASE_URL, name);
  };
  try {
    await dataSource.initialize();
    await runMigrations(dataSource);
  } catch (err) {
    await drop();
    throw err;
  }
  return { dataSource, url, name, drop };
}

/** Empties every tailfleet table (keeps the schema and the migrations table). */
export async function truncateAll(dataSource: DataSource): Promise<void> {
  const tables = dataSource.entityMetadatas.map((m) =>
    m.schema ? `"${m.schema}"."${m.tableName}"` : `"${m.tableName}"`,
  );
  await dataSource.query(`TRUNCATE ${tables.join(', ')} RESTART IDENTITY CASCADE`);
}
