/**
 * Pools: how long a claim takes from a running standby, from a stopped one and with none ready (a
 * cold provision), and what the pool policy's refills spend of the Hetzner request budget. One
 * tailfleet (role all) against the in-process simulator at realistic speed — the simulator has no
 * time scale, so every figure is in real seconds: a create action of 10 s and its power-on of 5 s,
 * 30 s from a running server to its `tailscale up` (boot and cloud-init), 3 s to enroll (a create is
 * ready in about 48 s), a power-on of 5 s, an ACPI shutdown of 5 s — with Hetzner's budget of 3600
 * requests an hour and the default POLL_INTERVAL_MS (WORKER_CONCURRENCY 100, so the 70 provisions
 * of the stocking run at once).
 *
 * Three pools are stocked at once: `warm` (running standbys), `parked` (stopped standbys) and `zbulk`
 * (more standbys than a tenth of the budget can pay for: its refills are held back). Then, at once:
 * claims one after another from `warm`, all of `parked` at a time, and cold claims on an empty pool.
 *
 *   npm run bench:pools [-- --running 20 --stopped 5 --cold 5]      (about 2 minutes)
 */
import 'reflect-metadata';
import { REFILL_BUDGET_SHARE } from '../src/pools/pool-policy';
import { type SimTimingsInput } from '../src/simulator';
import { fmt, log, missedTargets, percentile, table, writeResult, type Row } from './lib/report';
import { api, cloudRequestCounts, HETZNER_RATE_LIMIT, startBenchStack, until } from './lib/stack';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : NaN;
  return Number.isInteger(v) && v > 0 ? v : fallback;
}

const RUNNING = arg('running', 20);
const STOPPED = arg('stopped', 5);
const COLD = arg('cold', 5);
const BULK = 60;

/** Real-world durations (ms); the simulator runs at real speed. */
export const REALISTIC_TIMINGS: SimTimingsInput = {
  actionDurationMs: {
    create_server: 10_000,
    start_server: 5_000,
    stop_server: 3_000,
    shutdown_server: 1_000,
    reboot_server: 3_000,
    reset_server: 3_000,
    delete_server: 5_000,
    create_image: 10_000,
  },
  bootMs: 30_000,
  enrollDelayMs: 3_000,
  shutdownMs: 5_000,
  ignoreAcpiRate: 0,
  rateLimit: HETZNER_RATE_LIMIT,
};

const TARGET_RUNNING_P95_MS = 2_000;
const TARGET_STOPPED_P95_MS = 30_000;

type Call = ReturnType<typeof api>;

/** POST …/claim and follow the claim to its end; the client-side time from request to handover. */
async function timedClaim(call: Call, pool: string): Promise<{ ms: number; from: string }> {
  const started = performance.now();
  const res = await call('POST', `/v1/pools/${pool}/claim?wait=60`, {});
  if (res.status !== 200 && res.status !== 202) throw new Error(`claim on ${pool}: ${res.status} ${JSON.stringify(res.body)}`);
  let op = res.body.operation;
  while (op.status === 'queued' || op.status === 'running') op = (await call('GET', `/v1/operations/${op.id}?wait=60`)).body.operation;
  if (op.status !== 'succeeded') throw new Error(`claim on ${pool} ended ${op.status}: ${op.error}`);
  return { ms: performance.now() - started, from: res.body.from };
}

const stats = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return { n: xs.length, p50: percentile(sorted, 50), p95: percentile(sorted, 95), max: sorted[sorted.length - 1] ?? NaN };
};

export async function runPoolsBench() {
  const began = Date.now();
  const stack = await startBenchStack('pools', { timings: REALISTIC_TIMINGS, env: { POLICY_INTERVAL_SECONDS: '1', POLL_INTERVAL_MS: '1000', WORKER_CONCURRENCY: '100' } });
  const call = api(stack.tf.url!, stack.apiToken);
  try {
    const hetznerRequests = () => cloudRequestCounts(stack.sim.control.requestCounts()).hetzner;
    for (const [name, minReady, standby, maxSize] of [
      ['warm', RUNNING, 'running', null],
      ['parked', STOPPED, 'stopped', null],
      ['zbulk', BULK, 'running', 100],
      ['empty', 0, 'running', null],
    ] as const) {
      const res = await call('POST', '/v1/pools', { name, minReady, standby, maxSize });
      if (res.status !== 201) throw new Error(`create pool ${name}: ${res.status} ${JSON.stringify(res.body)}`);
    }
    const requestsBefore = hetznerRequests();
    const refillStart = Date.now();
    log(`stocking warm (${RUNNING} running) and parked (${STOPPED} stopped); zbulk asks for ${BULK} more`);
    const counts = async (name: string) => (await call('GET', `/v1/pools/${name}`)).body.counts as { ready: number; starting: number };
    let lastLog = 0;
    await until(
      'warm and parked stocked',
      async () => {
        const [w, p] = [await counts('warm'), await counts('parked')];
        if (Date.now() - lastLog > 10_000) {
          lastLog = Date.now();
          log(`warm ${JSON.stringify(w)} parked ${JSON.stringify(p)}`);
        }
        return w.ready === RUNNING && p.ready === STOPPED;
      },
      170_000,
      500,
    );
    // Whatever zbulk still has under way belongs to the refills too.
    await until('zbulk settled', async () => (await counts('zbulk')).starting === 0, 120_000, 500);
    const refillMs = Date.now() - refillStart;
    const refillRequests = hetznerRequests() - requestsBefore;
    const zbulk = await counts('zbulk');
    const policy = stack.tf.poolPolicy!;
    const budget = await policy.budget(new Date());
    const hourlyBudget = Math.floor(HETZNER_RATE_LIMIT.limit * REFILL_BUDGET_SHARE);
    const leadMs = await policy.readyLeadMs((await call('GET', '/v1/pools/warm')).body);
    log(`stocked in ${fmt.s(refillMs)}: ${refillRequests} Hetzner requests; zbulk got ${zbulk.ready} of ${BULK}`);

    log(`claiming: ${RUNNING} from warm one after another, ${STOPPED} from parked and ${COLD} cold at once`);
    const [running, stopped, cold] = await Promise.all([
      (async () => {
        const out: Array<{ ms: number; from: string }> = [];
        for (let i = 0; i < RUNNING; i++) out.push(await timedClaim(call, 'warm'));
        return out;
      })(),
      Promise.all(Array.from({ length: STOPPED }, () => timedClaim(call, 'parked'))),
      Promise.all(Array.from({ length: COLD }, () => timedClaim(call, 'empty'))),
    ]);
    for (const [what, list, from] of [['running', running, 'running'], ['stopped', stopped, 'stopped'], ['cold', cold, 'provision']] as const) {
      const wrong = list.filter((c) => c.from !== from);
      if (wrong.length) throw new Error(`${wrong.length} ${what} claims were served from ${wrong.map((c) => c.from).join(', ')}`);
    }
    const r = stats(running.map((c) => c.ms));
    const s = stats(stopped.map((c) => c.ms));
    const c = stats(cold.map((x) => x.ms));
    const rows: Row[] = [
      { bench: 'pools', metric: `claim from a running standby p50 (n=${r.n})`, value: fmt.s(r.p50) },
      { bench: 'pools', metric: 'claim from a running standby p95', value: fmt.s(r.p95), target: `≤ ${fmt.s(TARGET_RUNNING_P95_MS)}`, met: r.p95 <= TARGET_RUNNING_P95_MS },
      { bench: 'pools', metric: `claim from a stopped standby p50 (n=${s.n})`, value: fmt.s(s.p50) },
      { bench: 'pools', metric: 'claim from a stopped standby p95', value: fmt.s(s.p95), target: `≤ ${fmt.s(TARGET_STOPPED_P95_MS)}`, met: s.p95 <= TARGET_STOPPED_P95_MS },
      { bench: 'pools', metric: `claim with none ready (cold provision) p50 (n=${c.n})`, value: fmt.s(c.p50) },
      { bench: 'pools', metric: 'claim with none ready (cold provision) p95', value: fmt.s(c.p95) },
      {
        bench: 'pools',
        metric: `refill Hetzner requests (${RUNNING + STOPPED + zbulk.ready} standbys; ${BULK - zbulk.ready} held back)`,
        value: String(refillRequests),
        target: `≤ ${hourlyBudget} (10 % of ${HETZNER_RATE_LIMIT.limit}/h)`,
        met: refillRequests <= hourlyBudget,
      },
      { bench: 'pools', metric: "refill requests by the policy's own count", value: String(budget.spent), target: `≤ ${budget.allowed}`, met: budget.spent <= budget.allowed },
      { bench: 'pools', metric: 'measured p95 readiness (the schedules’ lead)', value: fmt.s(leadMs) },
    ];
    return { rows, refillMs, refillRequests, zbulk, running, stopped, cold, wallMs: Date.now() - began };
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  runPoolsBench()
    .then((result) => {
      console.log(table(result.rows));
      log(`wall time ${fmt.s(result.wallMs)}; results in ${writeResult('pools', result)}`);
      if (missedTargets(result.rows).length > 0) process.exitCode = 1;
    })
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
