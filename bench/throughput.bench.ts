/**
 * Throughput: how close tailfleet's end-to-end stop/start operations come to the ceiling that
 * BullMQ itself sets on the same Redis — a Worker with a no-op processor at tailfleet's concurrency.
 *
 * tailfleet's side runs through everything real: HTTP POST /v1/agents/:id/stop|start → Operation
 * row → queue → worker → runOperation → lifecycle → Hetzner client → simulator → PostgreSQL, with
 * every simulated action taking no time, so what is measured is tailfleet's own overhead.
 *
 *   npx tsx bench/throughput.bench.ts [-- --agents 100 --cycles 2 --bare-jobs 3000]
 */
import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { createProducerConnection, createWorkerConnection, defaultJobOptions } from '../src/queues/queues';
import { installRoundTripCounters, roundTrips, roundTripsSince, type RoundTrips } from './lib/counters';
import { fmt, log, table, writeResult, type Row } from './lib/report';
import { api, deleteRedisPrefix, REDIS_URL, startBenchStack, ZERO_TIMINGS } from './lib/stack';

export interface ThroughputOptions {
  agents: number;
  cycles: number;
  bareJobs: number;
  concurrency: number;
}

/** What one job or operation cost this process on average (the simulator and HTTP clients included). */
export interface CostPerOp {
  cpuMs: number;
  sql: number;
  redis: number;
  cloudRequests?: number;
  redisByCommand: Record<string, number>;
}

export interface ThroughputResult {
  concurrency: number;
  bare: { jobs: number; ms: number; jobsPerSec: number; perJob: CostPerOp };
  tailfleet: {
    agents: number;
    provision: { ops: number; ms: number; opsPerSec: number };
    stopStart: { ops: number; ms: number; opsPerSec: number; stopMs: number[]; startMs: number[]; perOp: CostPerOp };
  };
  ratio: number;
  rows: Row[];
}

const DEFAULTS: ThroughputOptions = { agents: 100, cycles: 2, bareJobs: 3000, concurrency: 10 };
const TARGET_RATIO = 0.25;

function costPer(n: number, cpu: NodeJS.CpuUsage, trips: RoundTrips, cloudRequests?: number): CostPerOp {
  const per = (x: number) => Number((x / n).toFixed(2));
  const redisByCommand: Record<string, number> = {};
  for (const [k, v] of Object.entries(trips.redisByCommand)) redisByCommand[k] = per(v);
  return {
    cpuMs: per((cpu.user + cpu.system) / 1000),
    sql: per(trips.sql),
    redis: per(trips.redis),
    ...(cloudRequests === undefined ? {} : { cloudRequests: per(cloudRequests) }),
    redisByCommand,
  };
}

/** Resolves once `worker` has completed `n` more jobs; any failure rejects (a bench must not hide one). */
function completions(worker: Worker, n: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    const timer = setTimeout(() => finish(new Error(`${worker.name}: ${seen}/${n} jobs completed after ${timeoutMs} ms`)), timeoutMs);
    const onCompleted = () => {
      if (++seen >= n) finish();
    };
    const onFailed = (job: { id?: string } | undefined, err: Error) => finish(new Error(`${worker.name} job ${job?.id} failed: ${err.message}`));
    const finish = (err?: Error) => {
      clearTimeout(timer);
      worker.off('completed', onCompleted);
      worker.off('failed', onFailed);
      if (err) reject(err);
      else resolve();
    };
    worker.on('completed', onCompleted);
    worker.on('failed', onFailed);
  });
}

/** The ceiling: the same queue options, connections and concurrency as tailfleet, and a processor that does nothing. */
export async function bareBullmq(jobs: number, concurrency: number): Promise<ThroughputResult['bare']> {
  const prefix = `tf-bench-bare-${randomBytes(4).toString('hex')}`;
  const producer = createProducerConnection(REDIS_URL);
  const workerConnection = createWorkerConnection(REDIS_URL);
  const queue = new Queue('stop', {
    connection: producer,
    prefix,
    defaultJobOptions: defaultJobOptions({ attempts: 5, backoffMs: 5000 }),
  });
  const worker = new Worker('stop', async () => undefined, { connection: workerConnection, prefix, concurrency, autorun: false });
  try {
    await queue.waitUntilReady();
    void worker.run();
    await worker.waitUntilReady();
    const round = async (n: number) => {
      const done = completions(worker, n, 120_000);
      const started = performance.now();
      await Promise.all(Array.from({ length: n }, (_, i) => queue.add('stop', { operationId: `bare-${i}`, agentId: 'bare' }, { jobId: `op-${randomBytes(8).toString('hex')}` })));
      await done;
      return performance.now() - started;
    };
    await round(Math.min(300, jobs)); // warm-up: JIT, Lua script loading
    const cpu = process.cpuUsage();
    const trips = roundTrips();
    const ms = await round(jobs);
    return { jobs, ms, jobsPerSec: (jobs * 1000) / ms, perJob: costPer(jobs, process.cpuUsage(cpu), roundTripsSince(trips)) };
  } finally {
    await worker.close();
    await queue.close();
    producer.disconnect();
    workerConnection.disconnect();
    await deleteRedisPrefix(prefix);
  }
}

export async function tailfleetStopStart(o: ThroughputOptions): Promise<ThroughputResult['tailfleet']> {
  const stack = await startBenchStack('throughput', {
    timings: ZERO_TIMINGS,
    env: { WORKER_CONCURRENCY: String(o.concurrency) },
  });
  try {
    const { tf } = stack;
    const call = api(tf.url!, stack.apiToken);
    const workers = tf.workers!.workers;

    log(`throughput: provisioning ${o.agents} agents`);
    let done = completions(workers.provision!, o.agents, 120_000);
    let started = performance.now();
    const created = await Promise.all(
      Array.from({ length: o.agents }, async (_, i) => {
        const res = await call('POST', '/v1/agents', { name: `bench-${i}` });
        if (res.status !== 201) throw new Error(`POST /v1/agents → ${res.status} ${JSON.stringify(res.body)}`);
        return res.body.agent.id as string;
      }),
    );
    await done;
    const provisionMs = performance.now() - started;

    const phase = async (verb: 'stop' | 'start') => {
      done = completions(workers[verb]!, created.length, 120_000);
      started = performance.now();
      await Promise.all(
        created.map(async (id) => {
          const res = await call('POST', `/v1/agents/${id}/${verb}`);
          if (res.status !== 202) throw new Error(`POST /v1/agents/${id}/${verb} → ${res.status} ${JSON.stringify(res.body)}`);
        }),
      );
      await done;
      return performance.now() - started;
    };
    const stopMs: number[] = [];
    const startMs: number[] = [];
    stack.sim.control.resetRequestCounts();
    const cpu = process.cpuUsage();
    const trips = roundTrips();
    for (let c = 0; c < o.cycles; c++) {
      log(`throughput: cycle ${c + 1}/${o.cycles}: ${o.agents} stops, then ${o.agents} starts`);
      stopMs.push(await phase('stop'));
      startMs.push(await phase('start'));
    }
    const cpuUsed = process.cpuUsage(cpu);
    const tripsUsed = roundTripsSince(trips);
    const cloudRequests = Object.values(stack.sim.control.requestCounts()).reduce((a, b) => a + b, 0);

    // Every operation really succeeded and every instance is back where it started.
    const ops: Array<{ type: string; status: string; n: number }> = await tf.dataSource.query(
      `SELECT type, status, count(*)::int AS n FROM operations GROUP BY type, status`,
    );
    const bad = ops.filter((r) => r.status !== 'succeeded');
    if (bad.length > 0) throw new Error(`operations not succeeded: ${JSON.stringify(bad)}`);
    const [{ n: running }] = await tf.dataSource.query(`SELECT count(*)::int AS n FROM instances WHERE status = 'running'`);
    if (running !== o.agents) throw new Error(`expected ${o.agents} running instances, found ${running}`);

    const ms = [...stopMs, ...startMs].reduce((a, b) => a + b, 0);
    const n = 2 * o.agents * o.cycles;
    return {
      agents: o.agents,
      provision: { ops: o.agents, ms: provisionMs, opsPerSec: (o.agents * 1000) / provisionMs },
      stopStart: { ops: n, ms, opsPerSec: (n * 1000) / ms, stopMs, startMs, perOp: costPer(n, cpuUsed, tripsUsed, cloudRequests) },
    };
  } finally {
    await stack.close();
  }
}

export async function runThroughputBench(opts: Partial<ThroughputOptions> = {}): Promise<ThroughputResult> {
  const o = { ...DEFAULTS, ...opts };
  installRoundTripCounters();
  log(`throughput: bare BullMQ, ${o.bareJobs} no-op jobs at concurrency ${o.concurrency}`);
  const bare = await bareBullmq(o.bareJobs, o.concurrency);
  const tailfleet = await tailfleetStopStart(o);
  const ratio = tailfleet.stopStart.opsPerSec / bare.jobsPerSec;
  const bench = 'throughput';
  const rows: Row[] = [
    { bench, metric: `bare BullMQ no-op jobs/s (concurrency ${o.concurrency})`, value: fmt.rate(bare.jobsPerSec) },
    { bench, metric: `tailfleet provisions/s (${o.agents} agents)`, value: fmt.rate(tailfleet.provision.opsPerSec) },
    { bench, metric: `tailfleet stop+start ops/s (${tailfleet.stopStart.ops} ops)`, value: fmt.rate(tailfleet.stopStart.opsPerSec) },
    {
      bench,
      metric: 'cost per bare job: CPU ms / SQL / Redis',
      value: `${bare.perJob.cpuMs} / ${bare.perJob.sql} / ${bare.perJob.redis}`,
    },
    {
      bench,
      metric: 'cost per tailfleet op: CPU ms / SQL / Redis / cloud HTTP',
      value: [tailfleet.stopStart.perOp.cpuMs, tailfleet.stopStart.perOp.sql, tailfleet.stopStart.perOp.redis, tailfleet.stopStart.perOp.cloudRequests].join(' / '),
    },
    { bench, metric: 'ratio tailfleet / bare', value: fmt.ratio(ratio), target: `≥ ${TARGET_RATIO}`, met: ratio >= TARGET_RATIO },
  ];
  return { concurrency: o.concurrency, bare, tailfleet, ratio, rows };
}

export function numberArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : NaN;
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

if (require.main === module) {
  runThroughputBench({
    agents: numberArg('agents', DEFAULTS.agents),
    cycles: numberArg('cycles', DEFAULTS.cycles),
    bareJobs: numberArg('bare-jobs', DEFAULTS.bareJobs),
    concurrency: numberArg('concurrency', DEFAULTS.concurrency),
  })
    .then((r) => {
      console.log(table(r.rows));
      const { rows: _rows, ...data } = r;
      console.log(`\nWrote ${writeResult('throughput', { at: new Date().toISOString(), ...data })}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
