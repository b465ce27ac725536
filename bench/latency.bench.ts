/**
 * API enqueue latency at fixed request rates (open loop): tailfleet's POST /v1/agents/:id/stop —
 * bearer auth, the agent row locked, the state checked, the Operation and its event written, the
 * job added — beside a bare Express 5 route that only adds a BullMQ job to the same Redis.
 *
 * tailfleet runs with ROLE=api: the jobs stay queued, as the bare route's do, so both measure the
 * request path alone. Each request stops a different running agent (seeded straight into the
 * database: only the API path is under test here).
 *
 *   npx tsx bench/latency.bench.ts [-- --seconds 2.5]
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Queue } from 'bullmq';
import express from 'express';
import { createProducerConnection, defaultJobOptions, jobIds } from '../src/queues/queues';
import { openLoop, type OpenLoopRequest, type OpenLoopResult } from './lib/open-loop';
import { fmt, log, percentile, table, writeResult, type Row } from './lib/report';
import { deleteRedisPrefix, REDIS_URL, startBenchStack } from './lib/stack';
import { numberArg } from './throughput.bench';

export const RATES = [100, 500];
const WARMUP = { rate: 100, ms: 1000 };
const TARGET_P99_MS = 25;
const TARGET_RATE = 500;

export interface LatencySeries {
  target: 'tailfleet' | 'bare';
  rate: number;
  sent: number;
  ok: number;
  errors: Record<string, number>;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  sendLagP99Ms: number;
  /** Share of the run the server's event loop was busy, and busy time per request (ms). */
  eventLoopUtilization: number;
  busyMsPerRequest: number;
}

export interface LatencyResult {
  seconds: number;
  series: LatencySeries[];
  rows: Row[];
}

function summarise(target: LatencySeries['target'], r: OpenLoopResult, elu: EventLoopUtilization): LatencySeries {
  const l = r.latencies;
  return {
    eventLoopUtilization: Number(elu.utilization.toFixed(3)),
    busyMsPerRequest: Number((elu.active / Math.max(1, r.sent)).toFixed(3)),
    target,
    rate: r.rate,
    sent: r.sent,
    ok: r.ok,
    errors: r.errors,
    p50: percentile(l, 50),
    p90: percentile(l, 90),
    p99: percentile(l, 99),
    max: l[l.length - 1] ?? NaN,
    sendLagP99Ms: r.sendLagP99Ms,
  };
}

/** Warm-up, then each rate in turn; `requests(n)` hands out n requests never used before. */
async function measure(
  target: LatencySeries['target'],
  ms: number,
  requests: (n: number) => OpenLoopRequest[],
  expectStatus: number,
): Promise<LatencySeries[]> {
  await openLoop(WARMUP.rate, WARMUP.ms, requests((WARMUP.rate * WARMUP.ms) / 1000), expectStatus);
  const out: LatencySeries[] = [];
  for (const rate of RATES) {
    log(`latency: ${target} at ${rate} req/s for ${ms} ms`);
    const batch = requests(Math.floor((rate * ms) / 1000));
    const elu = performance.eventLoopUtilization();
    const r = await openLoop(rate, ms, batch, expectStatus);
    out.push(summarise(target, r, performance.eventLoopUtilization(elu)));
  }
  return out;
}

const agentsNeeded = (ms: number) => (WARMUP.rate * WARMUP.ms) / 1000 + RATES.reduce((a, r) => a + Math.floor((r * ms) / 1000), 0);

async function tailfleetSeries(ms: number): Promise<LatencySeries[]> {
  const stack = await startBenchStack('latency', { env: { ROLE: 'api' } });
  try {
    const n = agentsNeeded(ms);
    // Running agents, as many provisions would have left them.
    const ids: string[] = (
      await stack.tf.dataSource.query(
        `WITH a AS (
           INSERT INTO agents (name, status) SELECT 'bench-' || g, 'active' FROM generate_series(1, $1) g RETURNING id
         ), i AS (
           INSERT INTO instances (agent_id, server_id, server_name, location, server_type, image, status, started_at)
           SELECT id, 5000000 + row_number() OVER (), 'bench', 'fsn1', 'cx22', 'ubuntu-24.04', 'running', now() FROM a
           RETURNING agent_id
         ) SELECT agent_id AS id FROM i`,
        [n],
      )
    ).map((r: { id: string }) => r.id);
    let next = 0;
    const requests = (count: number): OpenLoopRequest[] =>
      ids.slice(next, (next += count)).map((id) => ({
        method: 'POST',
        url: `${stack.tf.url}/v1/agents/${id}/stop`,
        headers: { authorization: `Bearer ${stack.apiToken}` },
      }));
    const series = await measure('tailfleet', ms, requests, 202);
    const [{ queued }] = await stack.tf.dataSource.query(`SELECT count(*)::int AS queued FROM operations WHERE status = 'queued'`);
    const waiting = await stack.tf.queues.stop.getWaitingCount();
    log(`latency: tailfleet left ${queued} queued operations and ${waiting} waiting stop jobs`);
    return series;
  } finally {
    await stack.close();
  }
}

async function bareSeries(ms: number): Promise<LatencySeries[]> {
  const prefix = `tf-bench-bare-api-${randomUUID().slice(0, 8)}`;
  const producer = createProducerConnection(REDIS_URL);
  const queue = new Queue('stop', { connection: producer, prefix, defaultJobOptions: defaultJobOptions({ attempts: 5, backoffMs: 5000 }) });
  const app = express();
  app.use(express.json());
  app.post('/v1/agents/:id/stop', async (req, res) => {
    const operationId = randomUUID();
    const job = await queue.add('stop', { operationId, agentId: req.params.id }, { jobId: jobIds.operation(operationId) });
    res.status(202).json({ job: { id: job.id } });
  });
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const requests = (count: number): OpenLoopRequest[] =>
      Array.from({ length: count }, () => ({ method: 'POST', url: `${url}/v1/agents/${randomUUID()}/stop` }));
    return await measure('bare', ms, requests, 202);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await queue.close();
    producer.disconnect();
    await deleteRedisPrefix(prefix);
  }
}

export async function runLatencyBench(opts: { seconds?: number } = {}): Promise<LatencyResult> {
  const seconds = opts.seconds ?? 2.5;
  const ms = seconds * 1000;
  const bare = await bareSeries(ms);
  const ours = await tailfleetSeries(ms);
  const bench = 'latency';
  const rows: Row[] = [];
  for (const s of [...bare, ...ours]) {
    const who = s.target === 'bare' ? 'bare Express+BullMQ' : 'tailfleet';
    const failed = s.sent - s.ok;
    const note = failed > 0 ? ` (${failed} failed: ${JSON.stringify(s.errors)})` : '';
    rows.push({ bench, metric: `${who} p50 @ ${s.rate} req/s`, value: fmt.ms(s.p50) });
    rows.push({
      bench,
      metric: `${who} server busy per request @ ${s.rate} req/s (event loop ${Math.round(s.eventLoopUtilization * 100)}% busy)`,
      value: fmt.ms(s.busyMsPerRequest),
    });
    const gated = s.target === 'tailfleet' && s.rate === TARGET_RATE;
    rows.push({
      bench,
      metric: `${who} p99 @ ${s.rate} req/s${note}`,
      value: fmt.ms(s.p99),
      ...(gated ? { target: `< ${TARGET_P99_MS} ms`, met: s.p99 < TARGET_P99_MS && failed === 0 } : {}),
    });
  }
  return { seconds, series: [...bare, ...ours], rows };
}

if (require.main === module) {
  runLatencyBench({ seconds: numberArg('seconds', 2.5) })
    .then((r) => {
      console.log(table(r.rows));
      const { rows: _rows, ...data } = r;
      console.log(`\nWrote ${writeResult('latency', { at: new Date().toISOString(), ...data })}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
