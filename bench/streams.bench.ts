/**
 * Memory of the API process while event-stream clients stall. CLIENTS clients open
 * GET /v1/events/stream over a table of EVENTS events, read the first chunk (to see the 200) and
 * then nothing more. Without backpressure the process would hold every client's whole replay
 * (about 9 MB each here); with it, a stalled client costs its socket buffers (in the kernel) and
 * one page in the process.
 *
 * Two scenarios, each against a fresh API process:
 *   - `same history` (the target): every client from `Last-Event-ID: 0`, as after a restart that
 *     dropped them all; they share the replay's pages.
 *   - `distinct histories` (no target, for comparison): client i from `Last-Event-ID: 7·i`; their
 *     first pages differ, and pages end at multiples of the page size, so from the second on they
 *     share them again (see src/events/replay-pages.ts).
 *
 * tailfleet runs as its own process (ROLE=api, `node --require tsx/cjs src/main.ts`, as the
 * shutdown test starts it), so its resident set is measured alone: before = median of five samples
 * once it answers /readyz; peak = the highest sample (every 20 ms, from /proc) from the first
 * connect until SECONDS after the last client stopped reading.
 *
 *   npm run bench:streams [-- --clients 50 --events 30000 --seconds 8]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';
import { simulatorEnv, startSimulator, type RunningSimulator } from '../src/simulator';
import { log, missedTargets, table, writeResult, type Row } from './lib/report';
import { ADMIN_DATABASE_URL, api, closeOnSignal, deleteRedisPrefix, REDIS_URL, until, ZERO_TIMINGS } from './lib/stack';
import { numberArg } from './throughput.bench';

const ROOT = join(__dirname, '..');
const TARGET_GROWTH_MB = 50;
const MB = 1024 * 1024;
// The API process runs with the defaults: EVENT_STREAM_MAX_PER_TOKEN streams per token, so the
// clients spread over as many tokens as that takes.
const PER_TOKEN = 10;

export interface StreamsScenario {
  name: 'same history' | 'distinct histories';
  rssBeforeBytes: number;
  rssPeakBytes: number;
  rssGrowthBytes: number;
}

export interface StreamsResult {
  clients: number;
  events: number;
  seconds: number;
  /** What every client asked for together: a whole replay's bytes × clients. */
  requestedBytes: number;
  scenarios: StreamsScenario[];
  rows: Row[];
}

/** Resident set size of a process, from /proc (Linux), else ps. */
function rssOf(pid: number): number {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (kb) return Number(kb[1]) * 1024;
  } catch {
    // not Linux, or the process is gone
  }
  return Number(execFileSync('ps', ['-o', 'rss=', '-p', String(pid)]).toString().trim()) * 1024;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Sends the stream request, reads the first chunk (status line and the first events), then never reads again. */
function stalledClient(port: number, token: string, lastEventId: string): Promise<{ socket: Socket; status: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write(
        `GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\n` +
          `Accept: text/event-stream\r\nLast-Event-ID: ${lastEventId}\r\n\r\n`,
      );
    });
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      resolve({ socket, status: chunk.toString('latin1').split('\r\n', 1)[0]! });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ApiProcess {
  child: ChildProcess;
  port: number;
  /** Stops it (SIGTERM, SIGKILL after 20 s). */
  stop(): Promise<void>;
}

async function startApiProcess(env: Record<string, string>): Promise<ApiProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--require', 'tsx/cjs', 'src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env, ROLE: 'api', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-4000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(20_000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  try {
    await until(
      'the API process to be ready',
      async () => {
        if (child.exitCode !== null) throw new Error(`the API process exited with ${child.exitCode}:\n${output}`);
        return (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200;
      },
      60_000,
      100,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { child, port, stop };
}

/** One API process, `clients` stalled streams (client i from `startOf(i)`), its RSS before and at the peak. */
async function measure(
  name: StreamsScenario['name'],
  env: Record<string, string>,
  opts: { clients: number; seconds: number; startOf: (i: number) => string; sockets: Socket[] },
): Promise<StreamsScenario> {
  const proc = await startApiProcess(env);
  try {
    const pid = proc.child.pid!;
    const admin = api(`http://127.0.0.1:${proc.port}`, env.API_TOKEN!);
    const tokens: string[] = [];
    for (let i = 0; i < Math.ceil(opts.clients / PER_TOKEN); i++) {
      const res = await admin('POST', '/v1/tokens', { name: `bench-${name.replace(' ', '-')}-${i}`, scope: 'read' });
      if (res.status !== 201) throw new Error(`POST /v1/tokens answered ${res.status}`);
      tokens.push(res.body.token as string);
    }
    await sleep(1000);
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      samples.push(rssOf(pid));
      await sleep(100);
    }
    const rssBeforeBytes = median(samples);
    let rssPeakBytes = rssBeforeBytes;
    const sampler = setInterval(() => {
      rssPeakBytes = Math.max(rssPeakBytes, rssOf(pid));
    }, 20);
    try {
      const opened = await Promise.all(
        Array.from({ length: opts.clients }, (_, i) => stalledClient(proc.port, tokens[i % tokens.length]!, opts.startOf(i))),
      );
      opts.sockets.push(...opened.map((o) => o.socket));
      const refused = opened.filter((o) => !/ 200 /.test(o.status));
      if (refused.length > 0) throw new Error(`${refused.length} streams were not served: ${refused[0]!.status}`);
      await sleep(opts.seconds * 1000);
    } finally {
      clearInterval(sampler);
    }
    if (proc.child.exitCode !== null) throw new Error(`the API process exited with ${proc.child.exitCode} while clients were stalled`);
    const now = rssOf(pid);
    log(`streams: ${name}: RSS ${(rssBeforeBytes / MB).toFixed(0)} MB before, ${(rssPeakBytes / MB).toFixed(0)} MB at the peak, ${(now / MB).toFixed(0)} MB at the end`);
    return { name, rssBeforeBytes, rssPeakBytes, rssGrowthBytes: Math.max(0, rssPeakBytes - rssBeforeBytes) };
  } finally {
    for (const s of opts.sockets.splice(0)) s.destroy();
    await proc.stop();
  }
}

export async function runStreamsBench(opts: { clients?: number; events?: number; seconds?: number } = {}): Promise<StreamsResult> {
  const clients = opts.clients ?? 50;
  const events = opts.events ?? 30_000;
  const seconds = opts.seconds ?? 8;
  const dbName = scratchDatabaseName('bench_streams');
  const prefix = `tf-bench-streams-${randomBytes(4).toString('hex')}`;
  let sim: RunningSimulator | undefined;
  const sockets: Socket[] = [];
  const close = async () => {
    for (const s of sockets) s.destroy();
    await sim?.close().catch(() => undefined);
    await deleteRedisPrefix(prefix).catch(() => undefined);
    await dropDatabase(ADMIN_DATABASE_URL, dbName).catch(() => undefined);
  };
  const forget = closeOnSignal(close);
  try {
    const databaseUrl = await createDatabase(ADMIN_DATABASE_URL, dbName);
    const ds = createDataSource({ url: databaseUrl, poolSize: 2, applicationName: 'tailfleet-bench-streams' });
    await ds.initialize();
    let requestedBytes: number;
    try {
      await runMigrations(ds);
      // Events shaped like a provision's; agent-less rows keep the seed to one statement. Written
      // before the API process starts, so it is not notified of them.
      await ds.query(
        `INSERT INTO events (entity_type, entity_id, from_status, to_status, reason, actor)
         SELECT 'instance', gen_random_uuid(), 'provisioning', 'running', 'provision step ' || g || ': server created and joined the tailnet', 'system'
           FROM generate_series(1, $1) g`,
        [events],
      );
      // What a whole replay weighs on the wire, roughly (the row as JSON and the `id:`/`data:` framing).
      const [{ bytes }] = await ds.query(`SELECT sum(length(row_to_json(e)::text) + 20)::bigint AS bytes FROM events e`);
      requestedBytes = Number(bytes) * clients;
    } finally {
      await ds.destroy();
    }
    sim = await startSimulator({ timings: ZERO_TIMINGS, seed: 1 });
    const env = {
      ...simulatorEnv(sim),
      DATABASE_URL: databaseUrl,
      REDIS_URL,
      API_TOKEN: randomBytes(24).toString('hex'),
      QUEUE_PREFIX: prefix,
    };
    log(`streams: ${events} events; ${clients} clients replaying them (${(requestedBytes / MB).toFixed(0)} MB asked for in all), then not reading for ${seconds} s`);
    const same = await measure('same history', env, { clients, seconds, startOf: () => '0', sockets });
    const distinct = await measure('distinct histories', env, { clients, seconds, startOf: (i) => String(i * 7), sockets });

    const growth = (s: StreamsScenario) => s.rssGrowthBytes / MB;
    const k = `${Math.round(events / 1000)}k events`;
    const rows: Row[] = [
      {
        bench: 'streams',
        metric: `event stream: RSS growth with ${clients} stalled clients (${k})`,
        value: `${growth(same).toFixed(1)} MB`,
        target: `< ${TARGET_GROWTH_MB} MB`,
        met: growth(same) < TARGET_GROWTH_MB,
      },
      {
        bench: 'streams',
        metric: `event stream: RSS growth with ${clients} stalled clients, each from another id (${k})`,
        value: `${growth(distinct).toFixed(1)} MB`,
      },
      {
        bench: 'streams',
        metric: `event stream: replay bytes the ${clients} clients asked for`,
        value: `${(requestedBytes / MB).toFixed(0)} MB`,
      },
    ];
    return { clients, events, seconds, requestedBytes, scenarios: [same, distinct], rows };
  } finally {
    await close();
    forget();
  }
}

if (require.main === module) {
  runStreamsBench({ clients: numberArg('clients', 50), events: numberArg('events', 30_000), seconds: numberArg('seconds', 8) })
    .then((r) => {
      console.log(table(r.rows));
      const { rows, ...data } = r;
      console.log(`\nWrote ${writeResult('streams', { at: new Date().toISOString(), ...data })}`);
      // A missed target fails the run, as in `npm run bench`.
      if (missedTargets(rows).length > 0) process.exitCode = 1;
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
