import { readdirSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../../src/db/admin';
import { createDataSource } from '../../src/db/data-source';
import { expressionDrift, pendingSchemaChanges, runMigrations, schemaDrift } from '../../src/db/migrate';
import { migrations } from '../../src/migrations';
import { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from '../helpers/db';

describe('db: migrations', () => {
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase('migrations');
  });

  after(async () => {
    await db?.drop();
  });

  it('create every table and enum type on a fresh database and record each migration', async () => {
    const tables: Array<{ table_name: string }> = await db.dataSource.query(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
    );
    const expected = [...db.dataSource.entityMetadatas.map((m) => m.tableName), 'migrations'].sort();
    expect(tables.map((t) => t.table_name)).to.deep.equal(expected);
    expect(expected).to.include.members(['agents', 'instances', 'provisioning_jobs', 'operations', 'events']);
    const enums: Array<{ typname: string; labels: string }> = await db.dataSource.query(
      `SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) AS labels
       FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname ORDER BY t.typname`,
    );
    // Each enum type holds exactly the values its entity column declares (the descriptors add the
    // operation types and the statuses they pass through), whatever order the migrations appended them in.
    const enumsOf = Object.fromEntries(enums.map((e) => [e.typname, e.labels.split(',').sort()]));
    const expectedEnums = new Map<string, readonly (string | number)[]>();
    for (const column of db.dataSource.entityMetadatas.flatMap((m) => m.columns)) {
      if (column.enumName && column.enum) expectedEnums.set(column.enumName, column.enum);
    }
    expect([...expectedEnums.keys()]).to.include.members([
      'agent_status',
      'event_entity_type',
      'instance_status',
      'operation_status',
      'operation_type',
      'provisioning_job_status',
    ]);
    for (const [typname, values] of expectedEnums) expect(enumsOf[typname], typname).to.deep.equal([...values].map(String).sort());
    expect(enumsOf.instance_status).to.include.members(['pending', 'running', 'stopping', 'hibernated', 'destroyed']);
    const applied: Array<{ name: string }> = await db.dataSource.query(`SELECT name FROM migrations ORDER BY id`);
    expect(applied.map((m) => m.name)).to.deep.equal(migrations.map((m) => new m().name));
  });

  it('are every file of src/migrations, oldest first, each one class named after its timestamp', () => {
    const files = readdirSync(path.join(__dirname, '../../src/migrations')).filter((f) => f !== 'index.ts');
    expect(files.length).to.be.greaterThan(15);
    expect(migrations.map((m) => m.name)).to.have.length(files.length);
    const stamps = files.map((f) => f.slice(0, 13)).sort();
    expect(migrations.map((m) => m.name.slice(-13))).to.deep.equal(stamps);
  });

  it('leave nothing for TypeORM to change: entities and migrations agree (drift check)', async () => {
    expect(await pendingSchemaChanges(db.dataSource)).to.deep.equal([]);
    expect(await expressionDrift(db.dataSource)).to.deep.equal([]);
  });

  it('is a no-op when run again', async () => {
    expect(await runMigrations(db.dataSource)).to.deep.equal({ applied: [] });
  });

  it('use the same application name on every pooled connection', async () => {
    const [{ application_name }] = await db.dataSource.query(`SHOW application_name`);
    expect(application_name).to.equal('tailfleet-test-migrations');
  });

  describe('drift detection', () => {
    let scratch: TestDatabase;

    beforeEach(async () => {
      scratch = await createTestDatabase('drift');
    });

    afterEach(async () => {
      await scratch?.drop();
    });

    it('reports a column that differs from its entity', async () => {
      await scratch.dataSource.query(`ALTER TABLE agents ALTER COLUMN name TYPE varchar(64)`);
      const drift = await pendingSchemaChanges(scratch.dataSource);
      expect(drift.join('\n')).to.match(/"agents".*"name"/);
    });

    it('reports a partial-index predicate and a check expression TypeORM compares by name only', async () => {
      await scratch.dataSource.query(`DROP INDEX uq_instances_live_agent`);
      await scratch.dataSource.query(
        `CREATE UNIQUE INDEX uq_instances_live_agent ON instances (agent_id) WHERE status <> 'destroyed'`,
      );
      await scratch.dataSource.query(`ALTER TABLE operations DROP CONSTRAINT ck_operations_progress`);
      await scratch.dataSource.query(
        `ALTER TABLE operations ADD CONSTRAINT ck_operations_progress CHECK (progress BETWEEN 0 AND 1000)`,
      );
      expect(await pendingSchemaChanges(scratch.dataSource)).to.deep.equal([]);
      const drift = await schemaDrift(scratch.dataSource);
      expect(drift).to.have.length(2);
      expect(drift[0]).to.match(/^index uq_instances_live_agent: predicate/);
      expect(drift[1]).to.match(/^check ck_operations_progress/);
    });

    it('undoes the migrations cleanly and applies them again', async () => {
      for (let i = 0; i < migrations.length; i++) await scratch.dataSource.undoLastMigration({ transaction: 'each' });
      const [{ count }] = await scratch.dataSource.query(
        `SELECT count(*)::int AS count FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'migrations'`,
      );
      expect(count).to.equal(0);
      expect((await runMigrations(scratch.dataSource)).applied).to.have.length(migrations.length);
      expect(await schemaDrift(scratch.dataSource)).to.deep.equal([]);
    });
  });

  it('serialise concurrent runners (API and workers starting together) and apply each migration once', async () => {
    const name = scratchDatabaseName('concurrent');
    const url = await createDatabase(ADMIN_DATABASE_URL, name);
    const sources = [1, 2, 3].map(() => createDataSource({ url, poolSize: 2 }));
    try {
      const results = await Promise.all(sources.map((s) => runMigrations(s)));
      const total = results.reduce((n, r) => n + r.applied.length, 0);
      expect(total).to.equal(migrations.length);
      const [{ count }] = await sources[0]!.query(`SELECT count(*)::int AS count FROM migrations`);
      expect(count).to.equal(migrations.length);
    } finally {
      await Promise.all(sources.map((s) => (s.isInitialized ? s.destroy() : undefined)));
      await dropDatabase(ADMIN_DATABASE_URL, name);
    }
  });

  it('migrate into a named schema, leaving public empty, with no drift', async () => {
    const name = scratchDatabaseName('schema');
    const url = await createDatabase(ADMIN_DATABASE_URL, name);
    const dataSource = createDataSource({ url, schema: 'fleet_a', poolSize: 2 });
    try {
      await runMigrations(dataSource);
      const rows: Array<{ table_schema: string; n: number }> = await dataSource.query(
        `SELECT table_schema, count(*)::int AS n FROM information_schema.tables
         WHERE table_schema IN ('public', 'fleet_a') GROUP BY table_schema`,
      );
      expect(rows).to.deep.equal([{ table_schema: 'fleet_a', n: dataSource.entityMetadatas.length + 1 }]);
      expect(await schemaDrift(dataSource)).to.deep.equal([]);
    } finally {
      if (dataSource.isInitialized) await dataSource.destroy();
      await dropDatabase(ADMIN_DATABASE_URL, name);
    }
  });

  it('refuse a schema name that is not a plain identifier', () => {
    expect(() => createDataSource({ url: ADMIN_DATABASE_URL, schema: 'x; DROP TABLE y' })).to.throw(/invalid schema/);
  });
});
