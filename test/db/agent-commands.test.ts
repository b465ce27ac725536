import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import { AgentRepository } from '../../src/db/agent.repository';
import { requestAgentCommand, warmAgentCommands, type AgentCommandInput } from '../../src/db/operation.repository';
import { createTestDatabase, type TestDatabase, truncateAll } from '../helpers/db';

// The statement behind POST /v1/agents/:id/stop|start|destroy, below the API: its prepared form per
// connection and the start-up warm-up. (Answers and races are covered through the API in test/api.)
describe('db: agent command statement', () => {
  let db: TestDatabase;
  let ds: DataSource;

  before(async () => {
    // One connection: every call below runs on the same PostgreSQL session.
    db = await createTestDatabase('agent_commands', { poolSize: 1 });
    ds = db.dataSource;
  });

  after(async () => {
    await db?.drop();
  });

  beforeEach(async () => {
    await truncateAll(ds);
  });

  async function runningAgent(name: string): Promise<string> {
    const bundle = await new AgentRepository({ dataSource: ds }).createWithProvision({ name, serverType: 'cx22', image: 'ubuntu-24.04' });
    await ds.query(`UPDATE instances SET status = 'running', server_id = 42 WHERE id = $1`, [bundle.instance.id]);
    await ds.query(`UPDATE agents SET status = 'active' WHERE id = $1`, [bundle.agent.id]);
    return bundle.agent.id;
  }

  const stop = (agentId: string): AgentCommandInput => {
    const operationId = randomUUID();
    return { type: 'stop', agentId, operationId, queueJobId: `op-${operationId}`, idempotencyKey: null };
  };

  const count = async (table: string) => Number((await ds.query(`SELECT count(*) AS n FROM ${table}`))[0].n);

  it('prepares the statement again when the session lost it', async () => {
    const first = await requestAgentCommand(ds, stop(await runningAgent('lost-1')));
    expect(first.outcome).to.equal('created');
    await ds.query('DEALLOCATE ALL');
    const again = await requestAgentCommand(ds, stop(await runningAgent('lost-2')));
    expect(again.outcome).to.equal('created');
    expect(await count('operations WHERE type = \'stop\'')).to.equal(2);
  });

  it('prepares only the statement the session lost when it still holds the other', async () => {
    expect((await requestAgentCommand(ds, stop(await runningAgent('half-1')))).outcome).to.equal('created');
    for (const [lost, name] of [['tailfleet_agent_command', 'half-2'], ['tailfleet_agent_lock', 'half-3']] as const) {
      await ds.query(`DEALLOCATE ${lost}`);
      expect((await requestAgentCommand(ds, stop(await runningAgent(name)))).outcome).to.equal('created');
      const held = await ds.query(`SELECT name FROM pg_prepared_statements WHERE name LIKE 'tailfleet_agent_%' ORDER BY name`);
      expect(held.map((r: { name: string }) => r.name)).to.deep.equal(['tailfleet_agent_command', 'tailfleet_agent_lock']);
    }
    expect(await count('operations WHERE type = \'stop\'')).to.equal(3);
  });

  it("finds an agent's operations under way without reading its history", async () => {
    const agentId = await runningAgent('veteran');
    // Five thousand finished stops behind it, as a long-lived agent collects.
    await ds.query(
      `INSERT INTO operations (type, agent_id, status, queue_job_id, requested_at)
       SELECT 'stop', $1, 'succeeded', 'op-old-' || g, now() - g * interval '1 minute' FROM generate_series(1, 5000) g`,
      [agentId],
    );
    await ds.query('ANALYZE operations');
    expect((await requestAgentCommand(ds, stop(agentId))).outcome).to.equal('created');
    const operationId = randomUUID();
    const [{ 'QUERY PLAN': plan }] = await ds.query(
      `EXPLAIN (FORMAT JSON) EXECUTE tailfleet_agent_command('${agentId}', 'stop', NULL, '${operationId}', 'op-${operationId}', 'system', NULL, '{}', NULL)`,
    );
    const text = JSON.stringify(plan);
    expect(text).to.include('idx_operations_agent_active');
    expect(text).to.not.include('idx_operations_agent_requested');
    expect(await requestAgentCommand(ds, stop(agentId))).to.deep.include({ outcome: 'same_pending' });
  });

  it('warms the connections without writing anything, and commands run on them afterwards', async () => {
    const before = { operations: await count('operations'), events: await count('events') };
    await warmAgentCommands(ds, 5); // more than the pool holds: it warms what there is and returns
    expect({ operations: await count('operations'), events: await count('events') }).to.deep.equal(before);
    const agentId = await runningAgent('warm');
    const result = await requestAgentCommand(ds, stop(agentId));
    expect(result.outcome).to.equal('created');
    expect(await requestAgentCommand(ds, stop(agentId))).to.deep.include({ outcome: 'same_pending' });
  });
});
