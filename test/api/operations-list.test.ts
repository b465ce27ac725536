import { expect } from 'chai';
import { OperationList, type OperationListQuery } from '../../src/db/operation-list';
import { markRunning, startApiHarness, type ApiHarness } from './harness';

describe('HTTP API: GET /v1/operations', () => {
  let h: ApiHarness;
  const agents: string[] = [];
  let stopOperation: string;

  before(async () => {
    h = await startApiHarness('operations_list');
    for (let i = 0; i < 5; i++) {
      const res = await h.api.request('POST', '/v1/agents', { body: { name: `list-box-${i}` } });
      expect(res.status, res.text).to.equal(201);
      agents.push(res.body.agent.id);
    }
    await markRunning(h.ds, agents[0]!);
    const stop = await h.api.request('POST', `/v1/agents/${agents[0]}/stop`);
    expect(stop.status, stop.text).to.equal(202);
    stopOperation = stop.body.operation.id;
    // Two provisions an hour old, one of them failed.
    await h.ds.query(`UPDATE operations SET requested_at = now() - interval '1 hour' WHERE agent_id = ANY($1) AND type = 'provision'`, [
      agents.slice(3),
    ]);
    await h.ds.query(`UPDATE operations SET status = 'failed', error = 'boom' WHERE agent_id = $1 AND type = 'provision'`, [agents[4]]);
  });

  after(async () => {
    await h?.close();
  });

  const list = async (query = '') => {
    const res = await h.api.request('GET', `/v1/operations${query}`);
    expect(res.status, res.text).to.equal(200);
    return res.body as { items: Array<{ id: string; type: string; status: string; agentId: string; requestedAt: string }>; limit: number; nextCursor: string | null };
  };

  it('lists every operation newest first, each as GET /v1/operations/:id shows it', async () => {
    const page = await list();
    expect(page.limit).to.equal(20);
    expect(page.nextCursor).to.equal(null);
    expect(page.items).to.have.length(6);
    expect(page.items[0]!.id).to.equal(stopOperation);
    const times = page.items.map((o) => Date.parse(o.requestedAt));
    expect(times).to.deep.equal([...times].sort((a, b) => b - a));
    for (const item of page.items) {
      const one = await h.api.request('GET', `/v1/operations/${item.id}`);
      expect(item).to.deep.equal(one.body.operation);
    }
  });

  it('pages with nextCursor without skipping or repeating an operation', async () => {
    const all = (await list()).items.map((o) => o.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await list(`?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.items.length).to.be.at.most(2);
      seen.push(...page.items.map((o) => o.id));
      cursor = page.nextCursor;
      pages++;
    } while (cursor && pages < 10);
    expect(seen).to.deep.equal(all);
    expect(pages).to.equal(3);
  });

  it('filters by status, type, agentId and since, together', async () => {
    expect((await list('?type=stop')).items.map((o) => o.id)).to.deep.equal([stopOperation]);
    expect((await list('?status=failed')).items.map((o) => o.agentId)).to.deep.equal([agents[4]]);
    expect((await list('?status=queued,failed&type=provision')).items).to.have.length(5);
    expect((await list(`?agentId=${agents[0]}`)).items.map((o) => o.type)).to.deep.equal(['stop', 'provision']);
    expect((await list(`?agentId=${agents[0]!.toUpperCase()}`)).items).to.have.length(2);
    const since = new Date(Date.now() - 10 * 60_000).toISOString();
    const recent = await list(`?since=${since}`);
    expect(recent.items).to.have.length(4);
    expect(recent.items.map((o) => o.agentId)).not.to.include.members(agents.slice(3));
    expect((await list(`?since=${since}&type=provision&status=queued`)).items).to.have.length(3);
    expect((await list(`?since=${encodeURIComponent('2000-01-01T00:00:00+02:00')}&status=failed`)).items).to.have.length(1);
  });

  it('refuses bad filters with a 400 naming each one', async () => {
    const res = await h.api.request(
      'GET',
      '/v1/operations?limit=101&status=done&type=resize&agentId=x&since=yesterday&cursor=AAAA&order=asc',
    );
    expect(res.status, res.text).to.equal(400);
    expect(res.body.errors.map((e: { path: string }) => e.path).sort()).to.deep.equal([
      'query',
      'query.agentId',
      'query.limit',
      'query.since',
      'query.status.0',
      'query.type.0',
    ]);
    const cursor = await h.api.request('GET', `/v1/operations?cursor=${Buffer.from('not-a-uuid').toString('base64url')}`);
    expect(cursor.status).to.equal(400);
    expect(cursor.body.errors).to.deep.equal([{ path: 'query.cursor', message: 'The cursor is not one this API handed out.' }]);
  });

  it('reads pages from an index, never sorting the whole table', async () => {
    const reads = new OperationList({ dataSource: h.ds });
    const plan = async (q: OperationListQuery) => {
      const [sql, params] = reads.query(q).getQueryAndParameters();
      // With a few rows, scanning and sorting everything is cheapest; forbid it to see what the indexes
      // offer. A Sort that remains means no index yields the page order.
      const runner = h.ds.createQueryRunner();
      try {
        await runner.startTransaction();
        for (const setting of ['enable_seqscan', 'enable_bitmapscan', 'enable_sort']) await runner.query(`SET LOCAL ${setting} = off`);
        const rows: Array<{ 'QUERY PLAN': string }> = await runner.query(`EXPLAIN ${sql}`, params);
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      } finally {
        await runner.rollbackTransaction();
        await runner.release();
      }
    };
    const ordered: Array<[OperationListQuery, string]> = [
      [{ limit: 20 }, 'idx_operations_requested'],
      [{ limit: 20, after: stopOperation }, 'idx_operations_requested'],
      [{ limit: 20, status: ['failed'] }, 'idx_operations_status_requested'],
      [{ limit: 20, status: ['failed'], after: stopOperation }, 'idx_operations_status_requested'],
    ];
    for (const [q, index] of ordered) {
      const text = await plan(q);
      expect(text, JSON.stringify(q)).to.contain(`Index Scan Backward using ${index}`);
      expect(text, JSON.stringify(q)).not.to.match(/Sort\b/);
    }
    // One agent's operations come from its index (agent_id, requested_at); only they are sorted, for
    // the id tie-break.
    const text = await plan({ limit: 20, agentId: agents[0]! });
    expect(text).to.match(/Index (Only )?Scan( Backward)? using idx_operations_agent_requested/);
    expect(text).to.match(/Index Cond: \(agent_id = /);
  });
});
