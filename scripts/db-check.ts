// Fails when the database at DATABASE_URL lacks migrations or differs from the entities.
// Usage: npm run db:check
import 'reflect-metadata';
import { createDataSource } from '../src/db/data-source';
import { schemaDrift } from '../src/db/migrate';

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error('DATABASE_URL is not set');
    process.exit(2);
  }
  const dataSource = createDataSource({ url, schema: process.env.DATABASE_SCHEMA || undefined, poolSize: 2 });
  await dataSource.initialize();
  try {
    if (await dataSource.showMigrations()) {
      console.error('some migrations are not applied yet: run npm run db:migrate');
      process.exitCode = 1;
      return;
    }
    const drift = await schemaDrift(dataSource);
    for (const line of drift) console.error(`drift: ${line}`);
    if (drift.length > 0) process.exitCode = 1;
    else console.log('database schema matches the entities');
  } finally {
    await dataSource.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
