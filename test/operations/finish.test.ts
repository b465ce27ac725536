import { expect } from 'chai';
import { createRepositories, type TransitionRequest } from '../../src/db';
import { TransitionConflictError } from '../../src/errors';
import type { OperationLedger } from '../../src/operations/ledger';
import { createTestDatabase, truncateAll, type TestDatabase } from '../helpers/db';
import { ledgerFor, queuedStop } from '../helpers/ledger';

// The ledger's finish: a workflow's last moves and its operation's success in one statement, so
// nobody sees the work's outcome without the operation's. When the operation is not running, the
// moves still happen and the caller records the outcome the usual way (succeed).

describe('operation ledger: finish', function () {
  let db: TestDatabase;
  let ledger: OperationLedger;

  before(async () => {
    db = await createTestDatabase('ledger_finish');
    ledger = ledgerFor(db.dataSource);
  });
  after(async () => {
    await db?.drop();
  });
  beforeEach(async () => {
    await truncateAll(db.dataSource);
  });

  /** A queued stop over a fresh agent (instance pending, agent draft), and the moves that stand for its work's end. */
  async function stopWithMoves(): Promise<{ operationId: string; agentId: string; instanceId: string; moves: TransitionRequest[] }> {
    const { operation, agentId } = await queuedStop(db.dataSource);
    const instance = (await createRepositories(db.dataSource).instances.findLiveByAgent(agentId))!;
    const moves: TransitionRequest[] = [
      { entity: 'instance', id: instance.id, from: ['pending'], to: 'provisioning', reason: 'work done', operationId: operation.id },
      { entity: 'agent', id: agentId, from: ['draft'], to: 'provisioning', reason: 'work done', operationId: operation.id },
    ];
    return { operationId: operation.id, agentId, instanceId: instance.id, moves };
  }

  async function statuses(ids: { operationId: string; agentId: string; instanceId: string }) {
    const [row] = await db.dataSource.query(
      `SELECT o.status AS operation, o.progress, o.current_step, o.finished_at, i.status AS instance, a.status AS agent
         FROM operations o, instances i, agents a WHERE o.id = $1 AND i.id = $2 AND a.id = $3`,
      [ids.operationId, ids.instanceId, ids.agentId],
    );
    return row;
  }

  it('commits the moves and the success in one transaction, with their events', async () => {
    const s = await stopWithMoves();
    expect(await ledger.claim(s.operationId, { attempt: 1, token: 'd1' })).to.equal('claimed');

    expect(await ledger.finish(s.operationId, s.moves, { step: 'done', percent: 100 })).to.equal(true);

    const row = await statuses(s);
    expect(row).to.include({ operation: 'succeeded', instance: 'provisioning', agent: 'provisioning', progress: 100, current_step: 'done' });
    expect(row.finished_at).to.be.instanceOf(Date);
    // xmin names the transaction that wrote a row: one for the three events.
    const events: Array<{ entity_id: string; to_status: string; tx: string }> = await db.dataSource.query(
      `SELECT entity_id, to_status, xmin::text AS tx FROM events WHERE operation_id = $1 AND to_status IN ('succeeded', 'provisioning')`,
      [s.operationId],
    );
    expect(events.map((e) => e.entity_id).sort()).to.deep.equal([s.operationId, s.instanceId, s.agentId].sort());
    expect(new Set(events.map((e) => e.tx)).size).to.equal(1);
  });

  it('makes the moves alone when a duplicate delivery handed the operation back; succeed then records it', async () => {
    const s = await stopWithMoves();
    await ledger.claim(s.operationId, { attempt: 1, token: 'd1' });
    await ledger.claim(s.operationId, { attempt: 2, token: 'd2' });
    expect(await ledger.retry(s.operationId, 'd2', { reason: 'attempt 2 failed', error: 'lost a race' })).to.equal(true);

    expect(await ledger.finish(s.operationId, s.moves, { step: 'done' })).to.equal(false);
    expect(await statuses(s)).to.include({ operation: 'queued', instance: 'provisioning', agent: 'provisioning' });

    await ledger.succeed(s.operationId, { step: 'done', percent: 100 });
    expect((await statuses(s)).operation).to.equal('succeeded');
  });

  it('leaves a failed operation failed, and still makes the moves (the work did happen)', async () => {
    const s = await stopWithMoves();
    await ledger.claim(s.operationId, { attempt: 1, token: 'd1' });
    await ledger.fail(s.operationId, 'd1', { reason: 'failed for good', error: 'boom' });

    expect(await ledger.finish(s.operationId, s.moves, { step: 'done' })).to.equal(false);
    expect(await statuses(s)).to.include({ operation: 'failed', instance: 'provisioning', agent: 'provisioning' });
  });

  it('tries the moves alone again when the database fails them once (the work is not left unrecorded)', async () => {
    const s = await stopWithMoves();
    await ledger.claim(s.operationId, { attempt: 1, token: 'd1' });
    await ledger.fail(s.operationId, 'd1', { reason: 'failed for good', error: 'boom' });
    // The first write of the instance's move fails on the database; a sequence is not rolled back
    // with the statement, so only the first attempt fails.
    await db.dataSource.query(`CREATE SEQUENCE finish_faults`);
    await db.dataSource.query(
      `CREATE FUNCTION finish_fault() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF nextval('finish_faults') = 1 THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`,
    );
    await db.dataSource.query(`CREATE TRIGGER finish_fault BEFORE UPDATE ON instances FOR EACH ROW EXECUTE FUNCTION finish_fault()`);
    try {
      expect(await ledger.finish(s.operationId, s.moves, { step: 'done' })).to.equal(false);
      expect(await statuses(s)).to.include({ operation: 'failed', instance: 'provisioning', agent: 'provisioning' });
      expect(Number((await db.dataSource.query(`SELECT last_value FROM finish_faults`))[0].last_value)).to.equal(2);
    } finally {
      await db.dataSource.query(`DROP TRIGGER finish_fault ON instances; DROP FUNCTION finish_fault(); DROP SEQUENCE finish_faults`);
    }
  });

  it('writes nothing when a move cannot happen, and names the row that refused', async () => {
    const s = await stopWithMoves();
    await ledger.claim(s.operationId, { attempt: 1, token: 'd1' });
    const [, agentMove] = s.moves;
    const moves = [s.moves[0]!, { ...agentMove!, from: ['active'], to: 'paused' } as TransitionRequest];

    const err = await ledger.finish(s.operationId, moves, { step: 'done' }).then(
      () => expect.fail('finish should refuse'),
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(TransitionConflictError);
    expect(err).to.include({ entity: 'agent', id: s.agentId, actual: 'draft' });
    expect(await statuses(s)).to.include({ operation: 'running', instance: 'pending', agent: 'draft' });
  });
});
