import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { expect } from 'chai';
import IORedis from 'ioredis';
import { Client } from 'pg';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { runOperation, type RunnerDeps } from '../../src/processors/run-operation';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { ledgerFor, queuedStop } from '../helpers/ledger';
import { waitFor } from '../helpers/wait';
import { deleteRedisPrefix, REDIS_URL } from '../pipeline/stack';

// Found by the chaos suite: PostgreSQL dropped the connection that was writing a job's success.
// The runner logged the failed write and returned, so BullMQ completed the job while its Operation
// stayed `running` for ever: nothing looks at a completed job again.

describe('chaos regression: the connection writing a success is dropped', function () {
  this.timeout(30_000);

  let db: TestDatabase;
  let redis: IORedis;
  let queue: Queue;
  let blocker: Client;
  const prefix = `tf-test-lost-${randomBytes(4).toString('hex')}`;
  let deps: RunnerDeps;

  before(async () => {
    db = await createTestDatabase('chaos_lost_success');
    redis = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
    queue = new Queue('stop', { connection: redis, prefix });
    deps = { ledger: ledgerFor(db.dataSource), logger: silentLogger, metrics: createMetrics(), queue };
    blocker = new Client({ connectionString: db.url });
    await blocker.connect();
  });

  after(async () => {
    await blocker?.end().catch(() => undefined);
    await queue?.close();
    redis?.disconnect();
    await deleteRedisPrefix(prefix);
    await db?.drop();
  });

  /**
   * Holds the Operation's row lock so the success write waits on it, terminates the backend that
   * waits (what pg_terminate_backend did to the worker's pool in the chaos run), then lets go.
   */
  async function holdRowLock(operationId: string): Promise<{ dropWaitingWriter: () => Promise<number> }> {
    await blocker.query('BEGIN');
    await blocker.query('SELECT 1 FROM operations WHERE id = $1 FOR UPDATE', [operationId]);
    const dropWaitingWriter = async () => {
      try {
        const pid = await waitFor('the success write to wait on the row lock', async () => {
          const { rows } = await blocker.query<{ pid: number }>(
            `SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'`,
          );
          return rows[0]?.pid;
        });
        await blocker.query('SELECT pg_terminate_backend($1)', [pid]);
        return pid;
      } finally {
        await blocker.query('ROLLBACK');
      }
    };
    return { dropWaitingWriter };
  }

  it('the success is written on a fresh connection, not lost with the job completed', async () => {
    const { operation: op, agentId } = await queuedStop(db.dataSource);
    const job = await queue.add('stop', { operationId: op.id, agentId }, { attempts: 3, jobId: op.queueJobId! });
    let dropped: Promise<number> | undefined;
    const result = await runOperation(deps, 'stop', job, 'delivery-1', async () => {
      // Not awaited: the write it waits for only starts once the work has returned.
      dropped = (await holdRowLock(op.id)).dropWaitingWriter();
      return 'done';
    });
    expect(result).to.equal('done');
    expect(await dropped).to.be.a('number');
    const [row] = await db.dataSource.query(`SELECT status, error, finished_at FROM operations WHERE id = $1`, [op.id]);
    expect(row.status).to.equal('succeeded');
    expect(row.error).to.equal(null);
    expect(row.finished_at).to.not.equal(null);
  });
});
