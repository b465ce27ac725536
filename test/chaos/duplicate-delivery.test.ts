import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { expect } from 'chai';
import IORedis from 'ioredis';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { runOperation, type RunnerDeps } from '../../src/processors/run-operation';
import { StateConflictError } from '../../src/errors';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { ledgerFor, queuedStop } from '../helpers/ledger';
import { deleteRedisPrefix, REDIS_URL } from '../pipeline/stack';

// Found by the chaos suite: BullMQ delivers a job again when its lock lapses (a starved or frozen
// worker), so two runs of one job can overlap. The duplicate's bookkeeping (retryable failure →
// queued, lost race → failed) must not hide the success of the run that did the work: the
// Operation stayed `queued` for ever once that run completed the job.

describe('chaos regression: overlapping deliveries of one job', function () {
  this.timeout(30_000);

  let db: TestDatabase;
  let redis: IORedis;
  let queue: Queue;
  const prefix = `tf-test-dup-${randomBytes(4).toString('hex')}`;
  let deps: RunnerDeps;

  before(async () => {
    db = await createTestDatabase('chaos_duplicate');
    redis = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
    queue = new Queue('stop', { connection: redis, prefix });
    deps = { ledger: ledgerFor(db.dataSource), logger: silentLogger, metrics: createMetrics(), queue };
  });

  after(async () => {
    await queue?.close();
    redis?.disconnect();
    await deleteRedisPrefix(prefix);
    await db?.drop();
  });

  async function overlap(duplicateError: Error) {
    const { operation: op, agentId } = await queuedStop(db.dataSource);
    const job = await queue.add('stop', { operationId: op.id, agentId }, { attempts: 3, jobId: op.queueJobId! });
    const result = await runOperation(deps, 'stop', job, 'delivery-1', async () => {
      // The redelivered copy runs while this one is still working, and fails.
      await runOperation(deps, 'stop', job, 'delivery-2', async () => {
        throw duplicateError;
      }).catch(() => undefined);
      return 'done';
    });
    expect(result).to.equal('done');
    const [row] = await db.dataSource.query(`SELECT status, error, finished_at FROM operations WHERE id = $1`, [op.id]);
    const events: { from_status: string; to_status: string; reason: string }[] = await db.dataSource.query(
      `SELECT from_status, to_status, reason FROM events WHERE entity_id = $1 ORDER BY id`,
      [op.id],
    );
    return { row, events };
  }

  it('a duplicate that failed with a retryable error does not leave the operation queued', async () => {
    const { row, events } = await overlap(new Error('connect ECONNRESET'));
    expect(row.status).to.equal('succeeded');
    expect(row.error).to.equal(null);
    expect(row.finished_at).to.not.equal(null);
    expect(events.map((e) => `${e.from_status}→${e.to_status}`)).to.deep.equal([
      'null→queued',
      'queued→running',
      'running→queued',
      'queued→running',
      'running→succeeded',
    ]);
    expect(events[3]!.reason).to.match(/duplicate delivery/);
  });

  it('a duplicate that lost the race to the run doing the work records no failure', async () => {
    const { row, events } = await overlap(new StateConflictError('instance is running, expected stopping', { lostRace: true }));
    expect(row.status).to.equal('succeeded');
    // A final state is final: the duplicate hands back instead of failing, so the operation ends once.
    expect(events.map((e) => e.to_status)).to.deep.equal(['queued', 'running', 'queued', 'running', 'succeeded']);
  });
});
