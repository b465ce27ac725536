import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

// Creating and dropping whole databases: used by the test helper and the migration generator,
// never by the running service.

const DATABASE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export function databaseUrl(adminUrl: string, database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

/** `tf_<label>_<random>`: label is reduced to [a-z0-9_] and trimmed so the name stays within 63 bytes. */
export function scratchDatabaseName(label: string): string {
  const clean = label.toLowerCase().replace(/[^a-z0-9_]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 40) || 'db';
  return `tf_${clean}_${randomBytes(5).toString('hex')}`;
}

async function withAdminClient<T>(adminUrl: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: adminUrl, application_name: 'tailfleet-admin' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function createDatabase(adminUrl: string, database: string): Promise<string> {
  if (!DATABASE_NAME.test(database)) throw new Error(`invalid database name ${JSON.stringify(database)}`);
  await withAdminClient(adminUrl, (c) => c.query(`CREATE DATABASE "${database}"`));
  return databaseUrl(adminUrl, database);
}

/** Drops the database even while clients are still connected to it. */
export async function dropDatabase(adminUrl: string, database: string): Promise<void> {
  if (!DATABASE_NAME.test(database)) throw new Error(`invalid database name ${JSON.stringify(database)}`);
  await withAdminClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`));
}
