import { expect } from 'chai';
import { pgPoolOf } from '../../src/db/data-source';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { waitFor } from '../helpers/wait';

describe('db: a pooled connection ended by the server', () => {
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase('connection_errors');
  });
  after(async () => {
    await db?.drop();
  });

  it('does not bring the process down when it was checked out and idle, and the next query on it fails instead', async () => {
    const client = await pgPoolOf(db.dataSource).connect();
    const [{ pid }] = (await client.query('SELECT pg_backend_pid() AS pid')).rows as Array<{ pid: number }>;
    let ended = false;
    client.once('end', () => (ended = true));
    // Unhandled, the server's FATAL would be thrown as an 'error' event: mocha reports it as an uncaught error.
    await db.dataSource.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitFor('the connection to end', () => ended, { timeoutMs: 5000 });
    const err = await client.query('SELECT 1').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(Error);
    client.release(err as Error);
    // The pool goes on with fresh connections.
    expect(await db.dataSource.query('SELECT 1 AS ok')).to.deep.equal([{ ok: 1 }]);
  });
});
