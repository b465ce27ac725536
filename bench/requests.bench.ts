/**
 * Cloud requests per operation when 100 provisions, then 100 stops, 100 starts and 100 destroys run
 * at once through the whole service, with realistic simulated durations in poll intervals (a create
 * that takes five, a shutdown that takes ten, as a real OS needs a while) and Hetzner's real rate
 * limit (3600/h, refilled 1/s). The figures are the simulator's own request counters, so every
 * retry, poll and list call counts; Hetzner and Tailscale are counted apart.
 *
 *   npx tsx bench/requests.bench.ts [-- --agents 100 --poll-ms 100]
 */
import type { Worker } from 'bullmq';
import { fmt, log, missedTargets, table, writeResult, type Row } from './lib/report';
import { api, cloud429s, cloudRequestCounts, HETZNER_RATE_LIMIT, startBenchStack, ZERO_TIMINGS } from './lib/stack';
import { numberArg } from './throughput.bench';

/** Hetzner requests per stop: the shutdown call and a share of the shared reads and status polls. */
const TARGET_PER_STOP = 1.3;
/** Per destroy: Hetzner, Tailscale (the deletes, and a share of the listings concurrent destroys share). */
const TARGET_PER_DESTROY = { hetzner: 4, tailscale: 2 };
/** Per provision, Hetzner / Tailscale: no more than before the shared listings (4.23 / 2.18). */
const TARGET_PER_PROVISION = { hetzner: 4.23, tailscale: 2.18 };

/** Cloud requests of one phase of `operations` concurrent provisions or destroys. */
export interface CloudPhase {
  operations: number;
  wallMs: number;
  hetznerPerOperation: number;
  tailscalePerOperation: number;
  /** Tailscale OAuth token requests (one per token lifetime, not per operation). */
  oauthRequests: number;
  rateLimited: number;
  byRoute: Record<string, number>;
}

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
  provision: CloudPhase;
  stop: PhaseCounts;
  start: PhaseCounts;
  destroy: CloudPhase;
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
  const provisionTimings = { create_server: 5 * pollMs, delete_server: 3 * pollMs };
  const stack = await startBenchStack('requests', {
    timings: { ...ZERO_TIMINGS, actionDurationMs: provisionTimings, bootMs: 3 * pollMs, enrollDelayMs: 5 * pollMs, rateLimit: HETZNER_RATE_LIMIT },
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

    // 429s as tailfleet's own metrics saw them (the client waits and retries, so they cost requests).
    const hetzner429s = () => cloud429s(tf);

    const cloudPhase = async (what: string, run: () => Promise<void>): Promise<CloudPhase> => {
      log(`requests: ${agents} concurrent ${what}`);
      sim.control.resetRequestCounts();
      const limitedBefore = await hetzner429s();
      const started = performance.now();
      await run();
      const wallMs = performance.now() - started;
      const c = cloudRequestCounts(sim.control.requestCounts());
      return {
        operations: agents,
        wallMs,
        hetznerPerOperation: c.hetzner / agents,
        tailscalePerOperation: c.tailscale / agents,
        oauthRequests: c.oauth,
        rateLimited: (await hetzner429s()) - limitedBefore,
        byRoute: c.byRoute,
      };
    };

    let ids: string[] = [];
    let done: Promise<void>;
    const provision = await cloudPhase('provisions', async () => {
      done = completions(workers.provision!, agents, 120_000);
      ids = await Promise.all(
        Array.from({ length: agents }, async (_, i) => {
          const res = await call('POST', '/v1/agents', { name: `bench-${i}` });
          if (res.status !== 201) throw new Error(`POST /v1/agents → ${res.status} ${JSON.stringify(res.body)}`);
          return res.body.agent.id as string;
        }),
      );
      await done;
    });

    sim.control.setTimings({
      actionDurationMs: { shutdown_server: pollMs, stop_server: pollMs, start_server: 3 * pollMs },
      shutdownMs,
    });

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

    const destroy = await cloudPhase('destroys', async () => {
      done = completions(workers.destroy!, agents, 120_000);
      await Promise.all(
        ids.map(async (id) => {
          const res = await call('POST', `/v1/agents/${id}/destroy`);
          if (res.status !== 202) throw new Error(`POST /v1/agents/${id}/destroy → ${res.status} ${JSON.stringify(res.body)}`);
        }),
      );
      await done;
    });
    const ops: Array<{ type: string; status: string; n: number }> = await tf.dataSource.query(
      `SELECT type, status, count(*)::int AS n FROM operations GROUP BY type, status`,
    );
    const bad = ops.filter((r) => r.status !== 'succeeded');
    if (bad.length > 0) throw new Error(`operations not succeeded: ${JSON.stringify(bad)}`);
    const left = sim.control.state();
    if (left.servers.length > 0 || left.devices.length > 0) {
      throw new Error(`destroys left ${left.servers.length} servers and ${left.devices.length} devices in the simulator`);
    }

    const bench = 'requests';
    const perOp = (p: CloudPhase) => `${fmt.ratio(p.hetznerPerOperation)} / ${fmt.ratio(p.tailscalePerOperation)}`;
    const rows: Row[] = [
      {
        bench,
        metric: `Hetzner / Tailscale requests per provision (${agents} concurrent, create ${5 * pollMs} ms, boot ${3 * pollMs} ms, enrol ${5 * pollMs} ms; +${provision.oauthRequests} OAuth token)`,
        value: perOp(provision),
        target: `≤ ${TARGET_PER_PROVISION.hetzner} / ${TARGET_PER_PROVISION.tailscale}`,
        met: provision.hetznerPerOperation <= TARGET_PER_PROVISION.hetzner && provision.tailscalePerOperation <= TARGET_PER_PROVISION.tailscale,
      },
      {
        bench,
        metric: `Hetzner requests per stop (${agents} concurrent, shutdown ${shutdownMs} ms, poll ${pollMs} ms)`,
        value: fmt.ratio(stop.perOperation),
        target: `≤ ${TARGET_PER_STOP}`,
        met: stop.perOperation <= TARGET_PER_STOP,
      },
      { bench, metric: `Hetzner requests per start (${agents} concurrent, power-on ${3 * pollMs} ms)`, value: fmt.ratio(start.perOperation) },
      { bench, metric: 'Tailscale requests during stops + starts', value: String(stop.tailscaleRequests + start.tailscaleRequests) },
      {
        bench,
        metric: `Hetzner / Tailscale requests per destroy (${agents} concurrent, delete ${3 * pollMs} ms; +${destroy.oauthRequests} OAuth token)`,
        value: perOp(destroy),
        target: `≤ ${TARGET_PER_DESTROY.hetzner} / ${TARGET_PER_DESTROY.tailscale}`,
        met: destroy.hetznerPerOperation <= TARGET_PER_DESTROY.hetzner && destroy.tailscalePerOperation <= TARGET_PER_DESTROY.tailscale,
      },
      {
        bench,
        metric: '429 responses seen by tailfleet, stops + starts (3600/h budget)',
        value: String(stop.rateLimited + start.rateLimited),
        target: '0',
        met: stop.rateLimited + start.rateLimited === 0,
      },
      {
        bench,
        metric: '429 responses seen by tailfleet, provisions / destroys',
        value: `${provision.rateLimited} / ${destroy.rateLimited}`,
        target: '0 / 0',
        met: provision.rateLimited + destroy.rateLimited === 0,
      },
      { bench, metric: `wall time: ${agents} stops / ${agents} starts`, value: `${fmt.s(stop.wallMs)} / ${fmt.s(start.wallMs)}` },
      { bench, metric: `wall time: ${agents} provisions / ${agents} destroys`, value: `${fmt.s(provision.wallMs)} / ${fmt.s(destroy.wallMs)}` },
    ];
    return { agents, pollIntervalMs: pollMs, shutdownMs, provision, stop, start, destroy, rows };
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  runRequestsBench({ agents: numberArg('agents', 100), pollMs: numberArg('poll-ms', 100) })
    .then((r) => {
      console.log(table(r.rows));
      const missed = missedTargets(r.rows);
      if (missed.length > 0) {
        console.error(`Missed: ${missed.map((m) => `${m.metric}: ${m.value} (target ${m.target})`).join('; ')}`);
        process.exitCode = 1;
      }
      for (const phase of ['provision', 'stop', 'start', 'destroy'] as const) console.log(`${phase} by route: ${JSON.stringify(r[phase].byRoute)}`);
      const { rows: _rows, ...data } = r;
      console.log(`\nWrote ${writeResult('requests', { at: new Date().toISOString(), ...data })}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
