import { expect } from 'chai';
import type { OperationLedger } from '../../src/operations/ledger';
import { createTestDatabase, truncateAll, type TestDatabase } from '../helpers/db';
import { ledgerFor, queuedStop } from '../helpers/ledger';

// A delivery whose claim another delivery took over (BullMQ redelivered the job after its lock
// lapsed) may still finish its attempt and report it. Only the delivery holding the claim may fail
// the operation or hand it back; the stale one's report must change nothing at all.

interface Snapshot {
  row: Record<string, unknown>;
  events: number;
}

describe('operation ledger: a delivery that lost its claim', function () {
  let db: TestDatabase;
  let ledger: OperationLedger;
  const finalFailures: string[] = [];

  before(async () => {
    db = await createTestDatabase('ledger_stale_claim');
    ledger = ledgerFor(db.dataSource);
    ledger.onFinalFailure(async (f) => {
      finalFailures.push(f.operation.id);
    });
  });
  after(async () => {
    await db?.drop();
  });
  beforeEach(async () => {
    finalFailures.length = 0;
    await truncateAll(db.dataSource);
  });

  /** A stop claimed by `stale`, then taken over by `owner` (a redelivery of its job). */
  async function takenOver(): Promise<string> {
    const { operation } = await queuedStop(db.dataSource);
    expect(await ledger.claim(operation.id, { attempt: 1, token: 'stale' })).to.equal('claimed');
    expect(await ledger.claim(operation.id, { attempt: 2, token: 'owner' })).to.equal('taken-over');
    return operation.id;
  }

  async function snapshot(operationId: string): Promise<Snapshot> {
    const [row] = await db.dataSource.query(
      `SELECT status, claim_token, attempts, error, failed_step, progress, current_step, finished_at, updated_at
         FROM operations WHERE id = $1`,
      [operationId],
    );
    const [{ n }] = await db.dataSource.query(`SELECT count(*)::int AS n FROM events WHERE entity_id = $1`, [operationId]);
    return { row, events: n };
  }

  const report = { reason: 'attempt failed', error: 'connect ECONNRESET', step: 'shutdown', percent: 40 };
  const staleCalls: Array<[string, (id: string) => Promise<unknown>, unknown]> = [
    ['fail', (id) => ledger.fail(id, 'stale', report), null],
    ['retry', (id) => ledger.retry(id, 'stale', report), false],
    ['abandon', (id) => ledger.abandon(id, 'stale', { ...report, reason: 'worker shutting down' }), false],
  ];

  for (const [name, call, refused] of staleCalls) {
    it(`${name} changes nothing`, async () => {
      const id = await takenOver();
      const before = await snapshot(id);
      expect(before.row.status).to.equal('running');
      expect(before.row.claim_token).to.equal('owner');

      expect(await call(id)).to.equal(refused);

      expect(await snapshot(id)).to.deep.equal(before);
      expect(finalFailures, 'no final-failure handling (no rollback)').to.deep.equal([]);
    });
  }

  it('the delivery holding the claim can still fail it, or hand it back', async () => {
    const failing = await takenOver();
    const failed = await ledger.fail(failing, 'owner', report);
    expect(failed?.status).to.equal('failed');
    expect(finalFailures).to.deep.equal([failing]);

    const handing = await takenOver();
    expect(await ledger.retry(handing, 'owner', report)).to.equal(true);
    expect((await snapshot(handing)).row).to.include({ status: 'queued', error: 'connect ECONNRESET', failed_step: 'shutdown' });
  });
});
