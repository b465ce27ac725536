import { expect } from 'chai';
import { runMigrations } from '../../src/db/migrate';
import { createTestDatabase, type TestDatabase } from '../helpers/db';

// The migration that scopes client Idempotency-Keys to their token: keys written before it (one key
// space for every token) are moved under the token that used them, and moved back on undo.

const SCOPED = 'ScopedIdempotencyKeysAndTokenActors1796045000000';

/** Undoes migrations, newest first, up to and including the one that scopes the keys. */
async function undoThroughScoped(db: TestDatabase): Promise<void> {
  for (;;) {
    const [last] = (await db.dataSource.query(`SELECT name FROM migrations ORDER BY id DESC LIMIT 1`)) as Array<{ name: string }>;
    await db.dataSource.undoLastMigration({ transaction: 'each' });
    if (!last || last.name === SCOPED) return;
  }
}

describe('db: scoping existing Idempotency-Keys to their tokens', () => {
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase('scoped_keys');
    await undoThroughScoped(db);
  });

  after(async () => {
    await db?.drop();
  });

  it('moves each client key under its token (the live one of that name, else the newest) or bootstrap, and back', async () => {
    const q = (sql: string, params: unknown[] = []) => db.dataSource.query(sql, params);
    const [revoked] = await q(`INSERT INTO api_tokens (name, scope, token_hash, token_prefix, revoked_at, created_at)
      VALUES ('ci', 'operate', repeat('a', 64), 'tf_a', now(), now() - interval '2 days') RETURNING id`);
    const [live] = await q(`INSERT INTO api_tokens (name, scope, token_hash, token_prefix) VALUES ('ci', 'operate', repeat('b', 64), 'tf_b') RETURNING id`);
    const insert = async (key: string | null, requestedBy: string) =>
      (await q(`INSERT INTO operations (type, idempotency_key, requested_by) VALUES ('reconcile', $1, $2) RETURNING id`, [key, requestedBy]))[0].id as string;
    const byCi = await insert('client:k-1', 'ci');
    const byBootstrap = await insert('client:k-2', 'bootstrap');
    const byGone = await insert('client:k-3', 'left-long-ago');
    const rollback = await insert('rollback:00000000-0000-4000-8000-000000000000', 'system');

    expect((await runMigrations(db.dataSource)).applied).to.include(SCOPED);
    const keys = async () =>
      Object.fromEntries(((await q(`SELECT id, idempotency_key FROM operations`)) as Array<{ id: string; idempotency_key: string }>).map((r) => [r.id, r.idempotency_key]));
    expect(await keys()).to.deep.equal({
      [byCi]: `client:${live.id}:k-1`,
      [byBootstrap]: 'client:bootstrap:k-2',
      [byGone]: 'client:left-long-ago:k-3',
      [rollback]: 'rollback:00000000-0000-4000-8000-000000000000',
    });
    expect(revoked.id).not.to.equal(live.id);

    // Two owners of one key after the migration: undoing keeps it for the newest operation only.
    const later = await insert(`client:${revoked.id}:k-1`, `token:ci#${revoked.id}`);
    await undoThroughScoped(db);
    expect(await keys()).to.deep.equal({
      [byCi]: null,
      [later]: 'client:k-1',
      [byBootstrap]: 'client:k-2',
      [byGone]: 'client:k-3',
      [rollback]: 'rollback:00000000-0000-4000-8000-000000000000',
    });
    await runMigrations(db.dataSource);
  });
});
