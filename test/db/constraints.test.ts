import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import { isUniqueViolation, pgErrorCode } from '../../src/db/errors';
import { Agent, Instance, Operation } from '../../src/entities';
import { createTestDatabase, type TestDatabase, truncateAll } from '../helpers/db';

describe('db: constraints', () => {
  let db: TestDatabase;
  let ds: DataSource;

  before(async () => {
    db = await createTestDatabase('constraints');
    ds = db.dataSource;
  });

  after(async () => {
    await db?.drop();
  });

  beforeEach(async () => {
    await truncateAll(ds);
  });

  async function newAgent(name = 'alpha'): Promise<Agent> {
    return ds.getRepository(Agent).save(ds.getRepository(Agent).create({ name }));
  }

  async function newInstance(agentId: string, status: Instance['status'] = 'pending'): Promise<Instance> {
    const repo = ds.getRepository(Instance);
    return repo.save(repo.create({ agentId, status, serverType: 'cx22', image: 'ubuntu-24.04' }));
  }

  describe('one live instance per agent', () => {
    it('refuses a second live instance for the same agent', async () => {
      const agent = await newAgent();
      await newInstance(agent.id, 'running');
      for (const status of ['pending', 'provisioning', 'stopped', 'destroying'] as const) {
        const err = await newInstance(agent.id, status).catch((e: unknown) => e);
        expect(isUniqueViolation(err, 'uq_instances_live_agent'), status).to.equal(true);
      }
    });

    it('refuses to revive an old instance while another is live', async () => {
      const agent = await newAgent();
      const old = await newInstance(agent.id, 'failed');
      await newInstance(agent.id, 'pending');
      const err = await ds
        .query(`UPDATE instances SET status = 'running' WHERE id = $1`, [old.id])
        .catch((e: unknown) => e);
      expect(isUniqueViolation(err, 'uq_instances_live_agent')).to.equal(true);
    });

    it('allows a new instance once the previous one is destroyed or failed', async () => {
      const agent = await newAgent();
      const first = await newInstance(agent.id, 'running');
      await ds.query(`UPDATE instances SET status = 'destroyed' WHERE id = $1`, [first.id]);
      const second = await newInstance(agent.id, 'provisioning');
      await ds.query(`UPDATE instances SET status = 'failed' WHERE id = $1`, [second.id]);
      await newInstance(agent.id, 'pending');
      const rows: Array<{ status: string }> = await ds.query(
        `SELECT status FROM instances WHERE agent_id = $1 ORDER BY created_at`,
        [agent.id],
      );
      expect(rows.map((r) => r.status)).to.deep.equal(['destroyed', 'failed', 'pending']);
    });

    it('keeps agents independent', async () => {
      const a = await newAgent('a');
      const b = await newAgent('b');
      await newInstance(a.id, 'running');
      await newInstance(b.id, 'running');
      expect(await ds.getRepository(Instance).count()).to.equal(2);
    });
  });

  it('round-trips a Hetzner server id beyond 2^53 exactly', async () => {
    const agent = await newAgent();
    const instance = await newInstance(agent.id);
    const big = '9007199254740993'; // 2^53 + 1: not representable as a JS number
    expect(String(Number(big))).to.not.equal(big);
    await ds.getRepository(Instance).update({ id: instance.id }, { serverId: big });
    const loaded = await ds.getRepository(Instance).findOneByOrFail({ id: instance.id });
    expect(loaded.serverId).to.equal(big);
    const max = '9223372036854775807';
    await ds.getRepository(Instance).update({ id: instance.id }, { serverId: max });
    expect((await ds.getRepository(Instance).findOneByOrFail({ serverId: max })).id).to.equal(instance.id);
  });

  it('limits agent names to 63 characters (a DNS label)', async () => {
    await newAgent('a'.repeat(63));
    const err = await newAgent('a'.repeat(64)).catch((e: unknown) => e);
    expect(pgErrorCode(err)).to.equal('22001'); // string_data_right_truncation
  });

  it('allows one operation per idempotency key and any number without one', async () => {
    const repo = ds.getRepository(Operation);
    await repo.insert({ type: 'stop', idempotencyKey: 'k-1' });
    await repo.insert({ type: 'stop', idempotencyKey: null });
    await repo.insert({ type: 'stop', idempotencyKey: null });
    const err = await repo.insert({ type: 'start', idempotencyKey: 'k-1' }).catch((e: unknown) => e);
    expect(isUniqueViolation(err, 'uq_operations_idempotency_key')).to.equal(true);
  });

  it('keeps operation progress within 0..100', async () => {
    const repo = ds.getRepository(Operation);
    await repo.insert({ type: 'stop', progress: 100 });
    const err = await repo.insert({ type: 'stop', progress: 101 }).catch((e: unknown) => e);
    expect(pgErrorCode(err)).to.equal('23514'); // check_violation
  });

  it('refuses an instance for an agent that does not exist', async () => {
    const err = await newInstance('00000000-0000-4000-8000-000000000000').catch((e: unknown) => e);
    expect(pgErrorCode(err)).to.equal('23503'); // foreign_key_violation
  });

  it('numbers events in insertion order with a database timestamp', async () => {
    const agent = await newAgent();
    await ds.query(
      `INSERT INTO events (entity_type, entity_id, agent_id, to_status, reason) VALUES
       ('agent', $1, $1, 'draft', 'one'), ('agent', $1, $1, 'provisioning', 'two')`,
      [agent.id],
    );
    const rows: Array<{ id: string; at: Date; reason: string }> = await ds.query(
      `SELECT id, at, reason FROM events ORDER BY id`,
    );
    expect(rows.map((r) => r.reason)).to.deep.equal(['one', 'two']);
    expect(typeof rows[0]!.id).to.equal('string');
    expect(rows[0]!.at).to.be.instanceOf(Date);
    expect(rows[1]!.at.getTime()).to.be.at.least(rows[0]!.at.getTime());
    const err = await ds
      .query(`INSERT INTO events (id, entity_type, entity_id, to_status, reason) VALUES (99, 'agent', $1, 'x', 'y')`, [
        agent.id,
      ])
      .catch((e: unknown) => e);
    expect(pgErrorCode(err), 'ids are generated, never supplied').to.equal('428C9');
  });
});
