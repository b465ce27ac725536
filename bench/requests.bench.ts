/**
 * Hetzner requests per operation when 100 stops (then 100 starts) run at once through the whole
 * service, with realistic simulated durations: a shutdown that takes ten poll intervals, as a real
 * OS needs a while, and Hetzner's real rate limit (3600/h, refilled 1/s). The figures are the
 * simulator's own request counters, so every retry, poll and list call counts.
 *
 *   npx tsx bench/requests.bench.ts [-- --agents 100 --poll-ms 100]
 */
import type { Worker } from 'bullmq';
import { fmt, log, table, writeResult, type Row } from './lib/report';
import { api, startBenchStack, ZERO_TIMINGS } from './lib/stack';
import { numberArg } from './throughput.bench';

const TARGET_PER_STOP = 3;
const HETZNER_RATE_LIMIT = { limit: 3600, refillPerSecond: 1 };

export interface PhaseCounts {
  operations: number;
  wallMs: number;
  hetznerRequests: number;
  perOperation: number;
  tailscaleRequests: number;
  rateLimited: number;
  byRoute: Record<string, number>;
}

export interface RequestsResult {
  agents: number;
  pollIntervalMs: number;
  shutdownMs: number;
  stop: PhaseCounts;
  start: PhaseCounts;
  rows: Row[];
}

function completions(worker: Worker, n: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    const timer = setTimeout(() => reject(new Error(`${worker.name}: ${seen}/${n} jobs completed after ${timeoutMs} ms`)), timeoutMs);
    worker.on('completed', () => {
      if (++seen === n) {
        clearTimeout(timer);
        resolve();
      }
    });
    worker.on('failed', (job, err) => {
      clearTimeout(timer);
      reject(new Error(`${worker.name} job ${job?.id} failed: ${err.message}`));
    });
  });
}

export async function runRequestsBench(opts: { agents?: number; pollMs?: number } = {}): Promise<RequestsResult> {
  const agents = opts.agents ?? 100;
  const pollMs = opts.pollMs ?? 100;
  const shutdownMs = 10 * pollMs;
  const stack = await startBenchStack('requests', {
    timings: { ...ZERO_TIMINGS, rateLimit: HETZNER_RATE_LIMIT },
    env: {
      WORKER_CONCURRENCY: String(agents),
      POLL_INTERVAL_MS: String(pollMs),
      SHUTDOWN_TIMEOUT_SECONDS: '60',
    },
  });
  try {
    const { tf, sim } = stack;
    const call = api(tf.url!, stack.apiToken);
    const workers = tf.workers!.workers;

    log(`requests: provisioning ${agents} agents`);
    let done = completions(workers.provision!, agents, 120_000);
    const ids = await Promise.all(
      Array.from({ length: agents }, async (_, i) => {
        const res = await call('POST', '/v1/agents', { name: `bench-${i}` });
        if (res.status !== 201) throw new Error(`POST /v1/agents → ${res.status} ${JSON.stringify(res.body)}`);
        return res.body.agent.id as string;
      }),
    );
    await done;

    sim.control.setTimings({
      actionDurationMs: { shutdown_server: pollMs, stop_server: pollMs, start_server: 3 * pollMs },
      shutdownMs,
    });

    // 429s as tailfleet's own metrics saw them (the client waits and retries, so they cost requests).
    const hetzner429s = async () =>
      (await tf.metrics.cloudRequests.get()).values
        .filter((v) => v.labels.api === 'hetzner' && String(v.labels.status) === '429')
        .reduce((a, v) => a + v.value, 0);

    const phase = async (verb: 'stop' | 'start'): Promise<PhaseCounts> => {
      log(`requests: ${agents} concurrent ${verb}s`);
      sim.control.resetRequestCounts();
      const limitedBefore = await hetzner429s();
      done = completions(workers[verb]!, agents, 120_000);
      const started = performance.now();
      await Promise.all(
        ids.map(async (id) => {
          const res = await call('POST', `/v1/agents/${id}/${verb}`);
          if (res.status !== 202) throw new Error(`POST /v1/agents/${id}/${verb} → ${res.status} ${JSON.stringify(res.body)}`);
        }),
      );
      await done;
      const wallMs = performance.now() - started;
      const counts = sim.control.requestCounts();
      const byRoute: Record<string, number> = {};
      let tailscaleRequests = 0;
      for (const [key, n] of Object.entries(counts)) {
        if (key.includes(' /hetzner/')) byRoute[key.replace('/hetzner/v1', '')] = n;
        else if (key.includes(' /tailscale/')) tailscaleRequests += n;
      }
      const hetznerRequests = Object.values(byRoute).reduce((a, b) => a + b, 0);
      const rateLimited = (await hetzner429s()) - limitedBefore;
      return { operations: agents, wallMs, hetznerRequests, perOperation: hetznerRequests / agents, tailscaleRequests, rateLimited, byRoute };
    };
    const stop = await phase('stop');
    const start = await phase('start');

    const [{ n: running }] = await tf.dataSource.query(`SELECT count(*)::int AS n FROM instances WHERE status = 'running'`);
    if (running !== agents) throw new Error(`expected ${agents} running instances after the starts, found ${running}`);

    const bench = 'requests';
    const rows: Row[] = [
      {
        bench,
        metric: `Hetzner requests per stop (${agents} concurrent, shutdown ${shutdownMs} ms, poll ${pollMs} ms)`,
        value: fmt.ratio(stop.perOperation),
        target: `≤ ${TARGET_PER_STOP}`,
        met: stop.perOperation <= TARGET_PER_STOP,
      },
      { bench, metric: `Hetzner requests per start (${agents} concurrent, power-on ${3 * pollMs} ms)`, value: fmt.ratio(start.perOperation) },
      { bench, metric: 'Tailscale requests during stops + starts', value: String(stop.tailscaleRequests + start.tailscaleRequests) },
      { bench, metric: '429 responses seen by tailfleet (3600/h budget)', value: String(stop.rateLimited + start.rateLimited) },
      { bench, metric: `wall time: ${agents} stops / ${agents} starts`, value: `${fmt.s(stop.wallMs)} / ${fmt.s(start.wallMs)}` },
    ];
    return { agents, pollIntervalMs: pollMs, shutdownMs, stop, start, rows };
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  runRequestsBench({ agents: numberArg('agents', 100), pollMs: numberArg('poll-ms', 100) })
    .then((r) => {
      console.log(table(r.rows));
      console.log(`\nstop by route:  ${JSON.stringify(r.stop.byRoute)}\nstart by route: ${JSON.stringify(r.start.byRoute)}`);
      const { rows: _rows, ...data } = r;
      console.log(`\nWrote ${writeResult('requests', { at: new Date().toISOString(), ...data })}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
