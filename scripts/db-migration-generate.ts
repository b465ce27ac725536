// Writes a migration for whatever the entities changed. Diffs against a scratch database that has
// only the committed migrations applied, so the state of a developer's own database never leaks in.
// Usage: npm run db:migration:generate -- <name-in-kebab-case>
import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';

const MIGRATIONS_DIR = join(__dirname, '..', 'src', 'migrations');

function pascal(kebab: string): string {
  return kebab
    .split(/[^a-zA-Z0-9]+/)
    .filter(Boolean)
    .map((p) => p[0]!.toUpperCase() + p.slice(1))
    .join('');
}

function render(className: string, up: string[], down: string[]): string {
  // TypeORM pads index DDL with stray spaces; tidy only that, never the inside of a statement.
  const tidy = (q: string) => q.trim().replace(/" {2}\(/g, '" (');
  const literal = (q: string) => '`' + tidy(q).replace(/[`\\]|\$\{/g, (m) => `\\${m}`) + '`';
  const lines = (qs: string[]) => qs.map((q) => `    await queryRunner.query(${literal(q)});`).join('\n');
  return `import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ${className} implements MigrationInterface {
  name = '${className}';

  public async up(queryRunner: QueryRunner): Promise<void> {
${lines(up)}
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
${lines(down)}
  }
}
`;
}

async function main(): Promise<void> {
  const name = process.argv[2];
  if (!name || !/^[a-z][a-z0-9-]*$/.test(name)) {
    console.error('usage: npm run db:migration:generate -- <name-in-kebab-case>');
    process.exit(2);
  }
  const adminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const database = scratchDatabaseName('migration_generate');
  const url = await createDatabase(adminUrl, database);
  const dataSource = createDataSource({ url, poolSize: 2 });
  try {
    await runMigrations(dataSource);
    const sql = await dataSource.driver.createSchemaBuilder().log();
    if (sql.upQueries.length === 0) {
      console.log('entities and migrations already match: nothing to generate');
      return;
    }
    // Unqualified names let the same migration run into any schema (see createDataSource's search_path).
    const unqualify = (q: string) => q.replaceAll('"public".', '');
    const up = sql.upQueries.map((q) => unqualify(q.query));
    const down = sql.downQueries.map((q) => unqualify(q.query)).reverse();
    const timestamp = Date.now();
    const className = `${pascal(name)}${timestamp}`;
    const file = `${timestamp}-${name}`;
    writeFileSync(join(MIGRATIONS_DIR, `${file}.ts`), render(className, up, down));

    console.log(`wrote src/migrations/${file}.ts (${up.length} statements); src/migrations/index.ts loads it by its name`);
  } finally {
    await dataSource.destroy().catch(() => undefined);
    await dropDatabase(adminUrl, database);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
