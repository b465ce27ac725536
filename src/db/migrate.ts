import { type DataSource, MigrationExecutor } from 'typeorm';
import { quotedTable } from './transitions';

// Arbitrary constant: every tailfleet process that migrates takes the same advisory lock.
const MIGRATION_LOCK_KEY = 7_412_903_611;

export interface MigrationRunResult {
  /** Names of the migrations applied by this call (empty when the schema was current). */
  applied: string[];
}

/**
 * Applies pending migrations. Safe to call from several processes at once (API and workers starting
 * together): a session advisory lock serialises them and the late comers find nothing to do.
 * Creates the data source's schema first when one is configured.
 */
export async function runMigrations(dataSource: DataSource): Promise<MigrationRunResult> {
  if (!dataSource.isInitialized) await dataSource.initialize();
  const queryRunner = dataSource.createQueryRunner('master');
  try {
    await queryRunner.connect();
    const schema = (dataSource.options as { schema?: string }).schema;
    await queryRunner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      if (schema) await queryRunner.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      const executor = new MigrationExecutor(dataSource, queryRunner);
      executor.transaction = 'each';
      const applied = await executor.executePendingMigrations();
      return { applied: applied.map((m) => m.name) };
    } finally {
      await queryRunner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    await queryRunner.release();
  }
}

/**
 * SQL TypeORM would run to make the database match the entities. Empty when the committed
 * migrations describe exactly the entities; anything else is drift (a missing migration).
 */
export async function pendingSchemaChanges(dataSource: DataSource): Promise<string[]> {
  const sql = await dataSource.driver.createSchemaBuilder().log();
  return sql.upQueries.map((q) => q.query);
}

/**
 * What TypeORM's diff does not look at: it compares indices and check constraints by name only, so a
 * changed partial-index predicate or check expression would go unnoticed. Each expected expression is
 * compiled by PostgreSQL itself on a throw-away copy (rolled back) and compared with what is installed.
 */
export async function expressionDrift(dataSource: DataSource): Promise<string[]> {
  const problems: string[] = [];
  const queryRunner = dataSource.createQueryRunner('master');
  try {
    await queryRunner.connect();
    await queryRunner.startTransaction();
    try {
      for (const metadata of dataSource.entityMetadatas) {
        const table = quotedTable(metadata);
        const [{ exists }] = await queryRunner.query(`SELECT to_regclass($1) IS NOT NULL AS "exists"`, [table]);
        if (!exists) {
          problems.push(`table ${metadata.tablePath} is missing`);
          continue;
        }
        for (const index of metadata.indices) {
          if (!index.name) continue;
          if (index.synchronize === false) {
            // Written by hand (e.g. a GIN index): only its existence can be checked here.
            const [found] = await queryRunner.query(`SELECT to_regclass($1) IS NOT NULL AS "exists"`, [`"${index.name}"`]);
            if (!found?.exists) problems.push(`index ${index.name} is missing`);
            continue;
          }
          const columns = index.columns.map((c) => `"${c.databaseName}"`).join(', ');
          await queryRunner.query(
            `CREATE INDEX "tf_expected_index" ON ${table} (${columns})${index.where ? ` WHERE ${index.where}` : ''}`,
          );
          const rows: Array<{ name: string; predicate: string | null }> = await queryRunner.query(
            `SELECT c.relname AS name, pg_get_expr(i.indpred, i.indrelid) AS predicate
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1::regclass AND c.relname IN ($2, 'tf_expected_index')`,
            [table, index.name],
          );
          const expected = rows.find((r) => r.name === 'tf_expected_index')?.predicate ?? null;
          const actual = rows.find((r) => r.name === index.name);
          if (!actual) problems.push(`index ${index.name} is missing`);
          else if (actual.predicate !== expected) {
            problems.push(`index ${index.name}: predicate is ${actual.predicate}, entities say ${expected}`);
          }
          await queryRunner.query(`DROP INDEX "tf_expected_index"`);
        }
        for (const check of metadata.checks) {
          await queryRunner.query(
            `ALTER TABLE ${table} ADD CONSTRAINT "tf_expected_check" CHECK (${check.expression}) NOT VALID`,
          );
          const rows: Array<{ name: string; definition: string }> = await queryRunner.query(
            `SELECT conname AS name, replace(pg_get_constraintdef(oid), ' NOT VALID', '') AS definition
             FROM pg_constraint WHERE conrelid = $1::regclass AND conname IN ($2, 'tf_expected_check')`,
            [table, check.name],
          );
          const expected = rows.find((r) => r.name === 'tf_expected_check')?.definition;
          const actual = rows.find((r) => r.name === check.name);
          if (!actual) problems.push(`check ${check.name} is missing`);
          else if (actual.definition !== expected) {
            problems.push(`check ${check.name}: is ${actual.definition}, entities say ${expected}`);
          }
          await queryRunner.query(`ALTER TABLE ${table} DROP CONSTRAINT "tf_expected_check"`);
        }
      }
    } finally {
      await queryRunner.rollbackTransaction();
    }
  } finally {
    await queryRunner.release();
  }
  return problems;
}

/** Every difference between the entities and the migrated database; empty when they agree. */
export async function schemaDrift(dataSource: DataSource): Promise<string[]> {
  return [...(await pendingSchemaChanges(dataSource)), ...(await expressionDrift(dataSource))];
}
