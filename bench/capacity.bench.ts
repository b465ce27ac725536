/**
 * Capacity: provisions where the cloud refuses places, and the request budget of several Hetzner
 * projects against one. Against the in-process simulator, a scratch PostgreSQL database and real
 * BullMQ queues, through the HTTP API.
 *
 *   npm run bench:capacity [-- --agents 1000 --spread 600]
 *
 * Rows:
 *  - placement: `--agents` provisions over HETZNER_PLACEMENTS fsn1:cx22,nbg1:cx22,hel1:cx32 with fsn1
 *    sold out from the start and nbg1 going out once half of them are active: the share that ends
 *    active (≥ 99.5 %) and the creates sent per agent (≤ 1.1: the refused place cools down fleet-wide).
 *  - projects: `--spread` provisions with Hetzner's budget of 3,600 requests an hour per project,
 *    accelerated 40× (a bucket of 90 refilled 40 a second), in three projects and in one: the wall
 *    time of three as a share of one's (≤ 40 %), and the 429s the three saw (0).
 */
import 'reflect-metadata';
import { fmt, log, missedTargets, table, writeResult, type Row } from './lib/report';
import { cloud429s, inBatches, pooledApi, startBenchStack, ZERO_TIMINGS, type BenchStack } from './lib/stack';

/** Hetzner's 3,600 requests an hour, 40× faster: a bucket of 3600/40 refilled 40 a second. */
const ACCELERATION = 40;
const ACCELERATED_BUDGET = { limit: 3600 / ACCELERATION, refillPerSecond: ACCELERATION };
const PLACEMENTS = 'fsn1:cx22,nbg1:cx22,hel1:cx32';
const RUN_TIMEOUT_MS = 90_000;

export interface CapacityBenchResult {
  placement: { agents: number; active: number; failed: number; creates: number; createsPerAgent: number; wallMs: number; landed: Record<string, number> };
  projects: { provisions: number; oneProjectMs: number; threeProjectsMs: number; share: number; rateLimitedOne: number; rateLimitedThree: number; perProject: Record<string, number> };
  rows: Row[];
}

async function provisionAll(stack: BenchStack, n: number, prefix: string, onProgress?: (active: number) => void): Promise<number> {
  const call = pooledApi(stack.tf.url!, stack.apiToken, 32);
  const started = Date.now();
  try {
    await inBatches(
      Array.from({ length: n }, (_, i) => i),
      32,
      async (i) => {
        const res = await call('POST', '/v1/agents', { name: `${prefix}-${i}` });
        if (res.status !== 201) throw new Error(`create ${i}: ${res.status} ${JSON.stringify(res.body)}`);
      },
    );
    // Done when no provision is left running or queued (each ends active, or failed for good and rolled back).
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    for (;;) {
      const rows: { status: string; n: number }[] = await stack.tf.dataSource.query(`SELECT status, count(*)::int AS n FROM agents GROUP BY status`);
      const by = Object.fromEntries(rows.map((r) => [r.status, r.n]));
      onProgress?.(by.active ?? 0);
      if ((by.active ?? 0) + (by.error ?? 0) + (by.destroyed ?? 0) >= n) break;
      if (Date.now() > deadline) throw new Error(`bench: provisions not done after ${RUN_TIMEOUT_MS} ms: ${JSON.stringify(by)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return Date.now() - started;
  } finally {
    call.close();
  }
}

async function placementRun(agents: number): Promise<CapacityBenchResult['placement']> {
  // Concurrency is what pays for a place going out: the creates already sent when the first refusal lands.
  const stack = await startBenchStack('capacity_place', {
    timings: ZERO_TIMINGS,
    env: { HETZNER_PLACEMENTS: PLACEMENTS, WORKER_CONCURRENCY: '20', JOB_BACKOFF_MS: '50' },
  });
  try {
    stack.sim.control.setSoldOut('fsn1', true);
    let nbg1Out = false;
    const wallMs = await provisionAll(stack, agents, 'place', (active) => {
      if (!nbg1Out && active >= agents / 2) {
        nbg1Out = true;
        stack.sim.control.setSoldOut('nbg1', true);
        log(`capacity: nbg1 sold out with ${active} agents active`);
      }
    });
    const rows: { status: string; n: number }[] = await stack.tf.dataSource.query(`SELECT status, count(*)::int AS n FROM agents GROUP BY status`);
    const by = Object.fromEntries(rows.map((r) => [r.status, r.n]));
    const landedRows: { place: string; n: number }[] = await stack.tf.dataSource.query(
      `SELECT location || '/' || server_type AS place, count(*)::int AS n FROM instances WHERE status = 'running' GROUP BY 1 ORDER BY 1`,
    );
    const creates = stack.sim.control.requestCounts()['POST /hetzner/v1/servers'] ?? 0;
    return {
      agents,
      active: by.active ?? 0,
      failed: agents - (by.active ?? 0),
      creates,
      createsPerAgent: creates / agents,
      wallMs,
      landed: Object.fromEntries(landedRows.map((r) => [r.place, r.n])),
    };
  } finally {
    await stack.close();
  }
}

async function spreadRun(provisions: number, projects: number): Promise<{ wallMs: number; rateLimited: number; perProject: Record<string, number> }> {
  const names = ['one', 'two', 'three'].slice(0, projects);
  const stack = await startBenchStack(`capacity_${projects}p`, {
    timings: { ...ZERO_TIMINGS, rateLimit: ACCELERATED_BUDGET },
    projects: projects > 1 ? names.map((name) => ({ name, token: `bench-${name}` })) : undefined,
    // The budget is the subject: the clients wait for it (the pacing that keeps 429s away) rather than give up.
    overrides: { hetzner: { maxRateLimitWaitMs: 30_000 } },
  });
  try {
    const wallMs = await provisionAll(stack, provisions, 'spread');
    const perProject: Record<string, number> = {};
    for (const p of stack.sim.control.projects()) perProject[p.name] = p.servers;
    return { wallMs, rateLimited: await cloud429s(stack.tf), perProject };
  } finally {
    await stack.close();
  }
}

export async function runCapacityBench(o: { agents?: number; spread?: number } = {}): Promise<CapacityBenchResult> {
  const agents = o.agents ?? 1000;
  const spread = o.spread ?? 600;
  log(`capacity: ${agents} provisions over ${PLACEMENTS}, fsn1 sold out, nbg1 going out at half`);
  const placement = await placementRun(agents);
  log(`capacity: ${spread} provisions in one project (${ACCELERATED_BUDGET.limit} requests, ${ACCELERATED_BUDGET.refillPerSecond}/s)`);
  const one = await spreadRun(spread, 1);
  log(`capacity: ${spread} provisions in three projects`);
  const three = await spreadRun(spread, 3);
  const share = three.wallMs / one.wallMs;
  const activeShare = placement.active / placement.agents;
  const rows: Row[] = [
    {
      bench: 'capacity',
      metric: `${agents} provisions over 3 placements, fsn1 sold out, nbg1 out at half: active (${Object.entries(placement.landed).map(([k, v]) => `${k} ${v}`).join(', ')}; ${fmt.s(placement.wallMs)})`,
      value: `${(activeShare * 100).toFixed(1)} %`,
      target: '≥ 99.5 %',
      met: activeShare >= 0.995,
    },
    {
      bench: 'capacity',
      metric: `${agents} provisions over 3 placements: create requests per agent (${placement.creates} creates)`,
      value: fmt.ratio(placement.createsPerAgent),
      target: '≤ 1.1',
      met: placement.createsPerAgent <= 1.1,
    },
    {
      bench: 'capacity',
      metric: `${spread} provisions, 3,600 req/h per project (×${ACCELERATION}): wall time, 3 projects / 1 (${fmt.s(three.wallMs)} / ${fmt.s(one.wallMs)}; servers ${Object.values(three.perProject).join('/')})`,
      value: `${(share * 100).toFixed(0)} %`,
      target: '≤ 40 %',
      met: share <= 0.4,
    },
    {
      bench: 'capacity',
      metric: `${spread} provisions in 3 projects: Hetzner 429 answers (one project: ${one.rateLimited})`,
      value: String(three.rateLimited),
      target: '0',
      met: three.rateLimited === 0,
    },
  ];
  return {
    placement,
    projects: {
      provisions: spread,
      oneProjectMs: one.wallMs,
      threeProjectsMs: three.wallMs,
      share,
      rateLimitedOne: one.rateLimited,
      rateLimitedThree: three.rateLimited,
      perProject: three.perProject,
    },
    rows,
  };
}

if (require.main === module) {
  const arg = (name: string, fallback: number) => {
    const i = process.argv.indexOf(`--${name}`);
    const n = i >= 0 ? Number(process.argv[i + 1]) : fallback;
    return Number.isInteger(n) && n > 0 ? n : fallback;
  };
  const started = Date.now();
  runCapacityBench({ agents: arg('agents', 1000), spread: arg('spread', 600) })
    .then((result) => {
      console.log(table(result.rows));
      writeResult('capacity', result);
      log(`capacity: done in ${fmt.s(Date.now() - started)}`);
      if (missedTargets(result.rows).length > 0) process.exitCode = 1;
    })
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
