// Page latency of GET /v1/agents and GET /v1/operations at 100,000 rows each.
//
// Seeds a scratch database through SQL (100,000 agents with labels, 100,000 operations), then runs
// the listing queries the API runs (src/db/agent-list.ts, src/db/operation-list.ts) for each filter:
// the first page and pages further on by cursor, and prints p50/p95 per filter.
//
// Usage: npm run bench:listing   (DATABASE_URL: an admin URL of the PostgreSQL to use; ROWS to change the size)
import 'reflect-metadata';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { AgentList, type AgentListQuery } from '../src/db/agent-list';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';
import { OperationList, type OperationListQuery } from '../src/db/operation-list';

const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROWS = Number(process.env.ROWS ?? 100_000);
const PAGES = 40;
const LIMIT = 20;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const database = scratchDatabaseName('bench_listing');
  const url = await createDatabase(ADMIN_URL, database);
  const ds = createDataSource({ url, poolSize: 2, applicationName: 'tailfleet-bench' });
  try {
    await ds.initialize();
    await runMigrations(ds);

    const seeded = Date.now();
    // Statuses and labels spread so some filters match many rows and some few.
    await ds.query(
      `INSERT INTO agents (name, status, labels, created_at)
       SELECT 'agent-' || i,
              (CASE WHEN i % 10 = 0 THEN 'destroyed' WHEN i % 97 = 0 THEN 'error' WHEN i % 13 = 0 THEN 'paused' ELSE 'active' END)::agent_status,
              jsonb_build_object('customer', 'c' || (i % 500), 'tier', CASE WHEN i % 7 = 0 THEN 'gold' ELSE 'basic' END),
              now() - (i || ' seconds')::interval
       FROM generate_series(1, $1::int) AS i`,
      [ROWS],
    );
    await ds.query(
      `INSERT INTO operations (type, status, agent_id, requested_at)
       SELECT (ARRAY['provision','stop','start','destroy','rollback'])[1 + i % 5]::operation_type,
              (CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 101 = 0 THEN 'queued' ELSE 'succeeded' END)::operation_status,
              a.id,
              now() - (i || ' seconds')::interval
       FROM generate_series(1, $1::int) AS i
       JOIN LATERAL (SELECT id FROM agents WHERE name = 'agent-' || (1 + i % 5000)) a ON true`,
      [ROWS],
    );
    await ds.query('ANALYZE agents');
    await ds.query('ANALYZE operations');
    const someAgent = (await ds.query(`SELECT id FROM agents WHERE name = 'agent-42'`))[0].id as string;
    console.log(`seeded ${ROWS} agents and ${ROWS} operations in ${((Date.now() - seeded) / 1000).toFixed(1)} s\n`);

    const agents = new AgentList({ dataSource: ds });
    const operations = new OperationList({ dataSource: ds });
    const since = new Date(Date.now() - ROWS * 500);

    const cases: Array<{ route: string; run: (after?: string) => Promise<{ items: Array<{ id: string }>; more: boolean }> }> = [
      ...(
        [
          ['GET /v1/agents', {}],
          ['GET /v1/agents?status=active', { status: ['active'] }],
          ['GET /v1/agents?status=error', { status: ['error'] }],
          ['GET /v1/agents?name=agent-4242', { name: 'agent-4242' }],
          ['GET /v1/agents?label=customer=c7', { labels: { customer: 'c7' } }],
          ['GET /v1/agents?label=customer=c7&label=tier=gold', { labels: { customer: 'c7', tier: 'gold' } }],
          ['GET /v1/agents?label=tier=gold&status=active', { labels: { tier: 'gold' }, status: ['active'] }],
        ] as Array<[string, Omit<AgentListQuery, 'limit'>]>
      ).map(([route, q]) => ({ route, run: (after?: string) => agents.list({ limit: LIMIT, ...q, after }) })),
      ...(
        [
          ['GET /v1/operations', {}],
          ['GET /v1/operations?status=failed', { status: ['failed'] }],
          ['GET /v1/operations?type=stop,start', { type: ['stop', 'start'] }],
          ['GET /v1/operations?agentId=…', { agentId: someAgent }],
          ['GET /v1/operations?since=…', { since }],
        ] as Array<[string, Omit<OperationListQuery, 'limit'>]>
      ).map(([route, q]) => ({ route, run: (after?: string) => operations.list({ limit: LIMIT, ...q, after }) })),
    ];

    const rows: string[][] = [];
    for (const c of cases) {
      const times: number[] = [];
      let after: string | undefined;
      let matched = 0;
      // Warm once, then walk PAGES pages by cursor (starting over at the end of a short listing).
      await c.run();
      for (let i = 0; i < PAGES; i++) {
        const started = process.hrtime.bigint();
        const page = await c.run(after);
        times.push(Number(process.hrtime.bigint() - started) / 1e6);
        matched += page.items.length;
        after = page.more ? page.items[page.items.length - 1]!.id : undefined;
      }
      times.sort((a, b) => a - b);
      rows.push([c.route, String(matched), percentile(times, 50).toFixed(2), percentile(times, 95).toFixed(2)]);
    }

    const header = ['listing', 'rows read', 'p50 ms', 'p95 ms'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (r: string[]) => r.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ');
    console.log(line(header));
    console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const r of rows) console.log(line(r));
    console.log(`\n${PAGES} pages of ${LIMIT} per listing, by cursor.`);
  } finally {
    if (ds.isInitialized) await ds.destroy();
    await dropDatabase(ADMIN_URL, database);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
