import { expect } from 'chai';
import { AgentList, type AgentListQuery } from '../../src/db/agent-list';
import { startApiHarness, type ApiHarness } from './harness';

describe('HTTP API: GET /v1/agents filters', () => {
  let h: ApiHarness;

  before(async () => {
    h = await startApiHarness('agents_list');
    // 300 agents through SQL: every third is acme's, every fifth gold, a few destroyed or in error.
    await h.ds.query(
      `INSERT INTO agents (name, status, labels, created_at)
       SELECT 'seed-' || i,
              (CASE WHEN i % 7 = 0 THEN 'destroyed' WHEN i % 50 = 1 THEN 'error' ELSE 'active' END)::agent_status,
              jsonb_strip_nulls(jsonb_build_object('customer', CASE WHEN i % 3 = 0 THEN 'acme' ELSE 'other' END,
                                                   'tier', CASE WHEN i % 5 = 0 THEN 'gold' END)),
              now() - (i || ' seconds')::interval
       FROM generate_series(1, 300) AS i`,
    );
    await h.ds.query('ANALYZE agents');
  });

  after(async () => {
    await h?.close();
  });

  const names = async (query: string) => {
    const res = await h.api.request('GET', `/v1/agents${query}`);
    expect(res.status, res.text).to.equal(200);
    return res.body as { items: Array<{ name: string; labels: Record<string, string> }>; nextCursor: string | null };
  };

  it('filters by labels (all of them), name and status, and pages through a filter by cursor', async () => {
    const expected = Array.from({ length: 300 }, (_, k) => k + 1)
      .filter((i) => i % 15 === 0 && i % 7 !== 0 && i % 50 !== 1)
      .map((i) => `seed-${i}`);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = await names(`?label=customer=acme&label=tier=gold&status=active&limit=7${cursor ? `&cursor=${cursor}` : ''}`);
      for (const a of page.items) expect(a.labels).to.include({ customer: 'acme', tier: 'gold' });
      seen.push(...page.items.map((a) => a.name));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).to.deep.equal(expected);
    expect((await names('?name=seed-42')).items.map((a) => a.name)).to.deep.equal(['seed-42']);
    expect((await names('?name=seed-42&status=active')).items).to.deep.equal([]);
  });

  it('reads pages from an index, never sorting or scanning the whole table', async () => {
    const reads = new AgentList({ dataSource: h.ds });
    const [anyId] = (await h.ds.query(`SELECT id FROM agents ORDER BY created_at DESC OFFSET 50 LIMIT 1`)) as Array<{ id: string }>;
    const plan = async (q: AgentListQuery, off: string[]) => {
      const [sql, params] = reads.query(q).getQueryAndParameters();
      const runner = h.ds.createQueryRunner();
      try {
        await runner.startTransaction();
        for (const setting of off) await runner.query(`SET LOCAL ${setting} = off`);
        const rows: Array<{ 'QUERY PLAN': string }> = await runner.query(`EXPLAIN ${sql}`, params);
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      } finally {
        await runner.rollbackTransaction();
        await runner.release();
      }
    };
    // With a few hundred rows a sequential scan is cheapest; forbid it (and the sort) to see what the
    // indexes offer. A Sort that remains means no index yields the page order.
    const ordered: Array<[AgentListQuery, string]> = [
      [{ limit: 20 }, 'idx_agents_created'],
      [{ limit: 20, after: anyId!.id }, 'idx_agents_created'],
      [{ limit: 20, status: ['error'] }, 'idx_agents_status_created'],
      [{ limit: 20, status: ['error'], after: anyId!.id }, 'idx_agents_status_created'],
      [{ limit: 20, name: 'seed-42' }, 'idx_agents_name_created'],
    ];
    for (const [q, index] of ordered) {
      const text = await plan(q, ['enable_seqscan', 'enable_bitmapscan', 'enable_sort']);
      expect(text, JSON.stringify(q)).to.contain(`Index Scan Backward using ${index}`, text);
      expect(text, JSON.stringify(q)).not.to.match(/Sort\b/);
    }
    // Labels come from the GIN index; only the matching rows are sorted.
    const labels = await plan({ limit: 20, labels: { customer: 'acme', tier: 'gold' } }, ['enable_seqscan', 'enable_indexscan']);
    expect(labels).to.match(/Bitmap Index Scan on idx_agents_labels/);
    expect(labels).to.match(/Index Cond: \(labels @> /);
  });
});
