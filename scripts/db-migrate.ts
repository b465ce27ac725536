// Applies pending migrations to DATABASE_URL (optionally DATABASE_SCHEMA). Usage: npm run db:migrate
import 'reflect-metadata';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error('DATABASE_URL is not set');
    process.exit(2);
  }
  const dataSource = createDataSource({ url, schema: process.env.DATABASE_SCHEMA || undefined, poolSize: 2 });
  try {
    const { applied } = await runMigrations(dataSource);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database schema is up to date');
  } finally {
    if (dataSource.isInitialized) await dataSource.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
