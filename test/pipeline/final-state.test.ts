import { randomBytes } from 'node:crypto';
import { Worker, type Job } from 'bullmq';
import { expect } from 'chai';
import IORedis from 'ioredis';
import { createRepositories } from '../../src/db';
import { silentLogger } from '../../src/lib/logger';
import type { OperationLedger } from '../../src/operations/ledger';
import { Outbox } from '../../src/operations/outbox';
import { OutboxRelay, settleFailedJob } from '../../src/operations/relay';
import { closeQueues, createQueues, type Queues } from '../../src/queues/queues';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { ledgerFor, queuedStop } from '../helpers/ledger';
import { deleteRedisPrefix, REDIS_URL } from './stack';

// A final state is final: an operation reaches succeeded, failed or cancelled once, and leaves it only
// by an operator's retry. These tests put two deciders in the order that broke that promise, on
// purpose, with real BullMQ jobs and real locks: the job is taken by hand (Worker.getNextJob) so each
// delivery's moment is chosen by the test, not by load.

const STALLED = 'job stalled more than allowable limit';

describe('pipeline: a final state is final', function () {
  this.timeout(30_000);

  let db: TestDatabase;
  let connection: IORedis;
  let queues: Queues;
  let outbox: Outbox;
  let ledger: OperationLedger;
  let taker: Worker;
  const prefix = `tf-test-final-${randomBytes(4).toString('hex')}`;

  before(async () => {
    db = await createTestDatabase('final_state');
    connection = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
    queues = createQueues({ connection, prefix, defaults: { attempts: 3, backoffMs: 1000 } });
    outbox = new Outbox({ queues, connection, logger: silentLogger });
    ledger = ledgerFor(db.dataSource);
    // No processor: jobs are taken by hand, each with the lock token the test gives it.
    taker = new Worker('stop', null, { connection, prefix, lockDuration: 30_000 });
  });

  after(async () => {
    await taker?.close();
    if (queues) await closeQueues(queues);
    connection?.disconnect();
    await deleteRedisPrefix(prefix);
    await db?.drop();
  });

  const events = async (operationId: string) =>
    (
      (await db.dataSource.query(`SELECT to_status, reason FROM events WHERE entity_type = 'operation' AND entity_id = $1 ORDER BY id`, [operationId])) as {
        to_status: string;
        reason: string;
      }[]
    );
  const row = async (operationId: string) =>
    ((await db.dataSource.query(`SELECT status, claim_token FROM operations WHERE id = $1`, [operationId])) as { status: string; claim_token: string | null }[])[0]!;

  /** A stop whose first delivery (token T1) claimed it and then stalled for good: its job is failed. */
  async function stalledStop() {
    const { operation, agentId } = await queuedStop(db.dataSource);
    await outbox.add(operation);
    const delivery = { type: 'stop', jobId: operation.queueJobId!, agentId };
    const first = (await taker.getNextJob('T1')) as Job;
    expect(first.id).to.equal(operation.queueJobId);
    expect(await ledger.claim(operation.id, { attempt: 1, token: 'T1', delivery })).to.equal('claimed');
    // What BullMQ does to a job whose worker stopped renewing its lock too often.
    await first.moveToFailed(Object.assign(new Error(STALLED), { name: 'UnrecoverableError' }), 'T1');
    expect(await queues.stop.getJobState(operation.queueJobId!)).to.equal('failed');
    return { operation, delivery };
  }

  it('the relay, deciding on a view taken before the workers redelivered the stalled job, leaves the new delivery alone', async () => {
    const { operation, delivery } = await stalledStop();
    const repos = createRepositories(db.dataSource);
    let raced = false;
    // The relay reads the operation (running under T1), then the job's state (failed). Between that
    // read and its decision, the workers' failed listener settles the same failure and a new
    // delivery claims the operation: exactly the window that used to end in a recorded failure.
    const racingOutbox = Object.create(outbox) as Outbox;
    racingOutbox.state = async (queue, jobId) => {
      const state = await outbox.state(queue, jobId);
      if (jobId === operation.queueJobId && state === 'failed' && !raced) {
        raced = true;
        const seen = (await repos.operations.findById(operation.id))!;
        const job = (await queues.stop.getJob(jobId))!;
        expect(await settleFailedJob(ledger, seen, job, STALLED)).to.equal('requeue');
        const second = (await taker.getNextJob('T2')) as Job;
        expect(second.id).to.equal(operation.queueJobId);
        expect(await ledger.claim(operation.id, { attempt: 2, token: 'T2', delivery })).to.equal('claimed');
      }
      return state;
    };
    const relay = new OutboxRelay({
      dataSource: db.dataSource,
      operations: repos.operations,
      ledger,
      outbox: racingOutbox,
      logger: silentLogger,
      graceMs: 0,
      runningGraceMs: 0,
    });
    await relay.runOnce();
    expect(raced, 'the relay saw the failed job').to.equal(true);

    // The new delivery still owns a running operation, and its success is the one final state.
    expect(await row(operation.id)).to.deep.equal({ status: 'running', claim_token: 'T2' });
    await ledger.succeed(operation.id);
    const seen = await events(operation.id);
    expect(seen.map((e) => e.to_status)).to.deep.equal(['queued', 'running', 'queued', 'running', 'succeeded']);
    expect(seen[2]!.reason).to.match(/^job stalled/);
  });

  it('two deciders on one stalled job: exactly one acts, and only once', async () => {
    const { operation } = await stalledStop();
    const seen = (await createRepositories(db.dataSource).operations.findById(operation.id))!;
    const job = (await queues.stop.getJob(operation.queueJobId!))!;
    const outcomes = await Promise.all([settleFailedJob(ledger, seen, job, STALLED), settleFailedJob(ledger, seen, job, STALLED)]);
    expect(outcomes.sort()).to.deep.equal(['requeue', 'unchanged']);
    expect(await queues.stop.getJobState(operation.queueJobId!)).to.equal('waiting');
    expect((await events(operation.id)).map((e) => e.to_status)).to.deep.equal(['queued', 'running', 'queued']);
  });

  it('a success reported after the operation was recorded failed does not revive it', async () => {
    const { operation, agentId } = await queuedStop(db.dataSource);
    await ledger.claim(operation.id, { attempt: 1, token: 'T1', delivery: { type: 'stop', jobId: operation.queueJobId!, agentId } });
    expect(await ledger.fail(operation.id, 'T1', { reason: 'failed: boom', error: 'boom' })).to.not.equal(null);
    await ledger.succeed(operation.id);
    expect((await row(operation.id)).status).to.equal('failed');
    expect((await events(operation.id)).map((e) => e.to_status)).to.deep.equal(['queued', 'running', 'failed']);
  });

  it('an operator retrying a failed job runs it again, recorded as the operator retry it is', async () => {
    const { operation, agentId } = await queuedStop(db.dataSource);
    const delivery = { type: 'stop', jobId: operation.queueJobId!, agentId };
    await ledger.claim(operation.id, { attempt: 1, token: 'T1', delivery });
    await ledger.fail(operation.id, 'T1', { reason: 'failed: boom', error: 'boom' });
    expect(await ledger.claim(operation.id, { attempt: 2, token: 'T2', delivery })).to.equal('claimed');
    const seen = await events(operation.id);
    expect(seen.map((e) => e.to_status)).to.deep.equal(['queued', 'running', 'failed', 'running']);
    expect(seen[3]!.reason).to.match(/retried by an operator/);
  });

  it('the failed attempt delivered again (its worker died before BullMQ recorded the failure) runs nothing', async () => {
    const { operation, agentId } = await queuedStop(db.dataSource);
    const delivery = { type: 'stop', jobId: operation.queueJobId!, agentId };
    await ledger.claim(operation.id, { attempt: 1, token: 'T1', delivery });
    await ledger.fail(operation.id, 'T1', { reason: 'failed: boom', error: 'boom' });
    // BullMQ never counted the attempt, so the redelivery carries the same attempt number.
    expect(await ledger.claim(operation.id, { attempt: 1, token: 'T2', delivery })).to.equal('failed');
    expect(await row(operation.id)).to.deep.equal({ status: 'failed', claim_token: 'T1' });
    expect((await events(operation.id)).map((e) => e.to_status)).to.deep.equal(['queued', 'running', 'failed']);
  });
});
