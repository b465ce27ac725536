/**
 * Memory of the API process while event-stream clients stall: CLIENTS clients open
 * GET /v1/events/stream with `Last-Event-ID: 0` over a table of EVENTS events, read the first chunk
 * (to see the 200) and then nothing more. Without backpressure the process would hold every
 * client's whole replay (about 13 MB each here); with it, each costs one socket buffer's worth.
 *
 * tailfleet runs as its own process (ROLE=api, `node --require tsx/cjs src/main.ts`, as the
 * shutdown test starts it), so its resident set is measured alone: before = median of a few samples
 * once it is ready and has served one request and one stream; peak = the highest sample (every
 * 20 ms, from /proc) while the clients are connected and stalled.
 *
 *   npm run bench:streams [-- --clients 50 --events 30000 --seconds 8]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';
import { simulatorEnv, startSimulator, type RunningSimulator } from '../src/simulator';
import { log, missedRequired, table, writeResult, type Row } from './lib/report';
import { ADMIN_DATABASE_URL, api, closeOnSignal, deleteRedisPrefix, REDIS_URL, until, ZERO_TIMINGS } from './lib/stack';
import { numberArg } from './throughput.bench';

const ROOT = join(__dirname, '..');
const TARGET_GROWTH_MB = 50;
const MB = 1024 * 1024;

export interface StreamsResult {
  clients: number;
  events: number;
  seconds: number;
  /** What every client asked for together: the replay's bytes × clients. */
  requestedBytes: number;
  rssBeforeBytes: number;
  rssPeakBytes: number;
  rssGrowthBytes: number;
  /** The API process's settings under test. */
  env: Record<string, string>;
  rows: Row[];
}

/** Resident set size of a process, from /proc (Linux), else ps. */
function rssOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
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

/** Sends the stream request, reads the first chunk (status line and the first events), then stops reading for good. */
function stalledClient(port: number, token: string): Promise<{ socket: Socket; status: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write(
        `GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\n` +
          'Accept: text/event-stream\r\nLast-Event-ID: 0\r\n\r\n',
      );
    });
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      resolve({ socket, status: chunk.toString('latin1').split('\r\n', 1)[0]! });
    });
  });
}

/** Opens a stream from `Last-Event-ID: 0` and reads until `count` events arrived; answers how many did. */
async function readWholeReplay(baseUrl: string, token: string, count: number): Promise<number> {
  const abort = new AbortController();
  const res = await fetch(`${baseUrl}/v1/events/stream`, {
    headers: { authorization: `Bearer ${token}`, 'last-event-id': '0' },
    signal: AbortSignal.any([abort.signal, AbortSignal.timeout(120_000)]),
  });
  if (res.status !== 200 || !res.body) throw new Error(`warm-up stream answered ${res.status}`);
  let seen = 0;
  let tail = '';
  try {
    for await (const piece of res.body.pipeThrough(new TextDecoderStream())) {
      const text = tail + piece;
      const lines = text.split('\n');
      tail = lines.pop()!;
      seen += lines.filter((l) => l.startsWith('id: ')).length;
      if (seen >= count) break;
    }
  } finally {
    abort.abort();
  }
  return seen;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function runStreamsBench(opts: { clients?: number; events?: number; seconds?: number } = {}): Promise<StreamsResult> {
  const clients = opts.clients ?? 50;
  const events = opts.events ?? 30_000;
  const seconds = opts.seconds ?? 8;
  const dbName = scratchDatabaseName('bench_streams');
  const prefix = `tf-bench-streams-${randomBytes(4).toString('hex')}`;
  const apiToken = randomBytes(24).toString('hex');
  let sim: RunningSimulator | undefined;
  let child: ChildProcess | undefined;
  const sockets: Socket[] = [];
  const close = async () => {
    for (const s of sockets) s.destroy();
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
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
      // Events shaped like a provision's: agent-less rows keep the seed to one statement.
      await ds.query(
        `INSERT INTO events (entity_type, entity_id, from_status, to_status, reason, actor)
         SELECT 'instance', gen_random_uuid(), 'provisioning', 'running', 'provision step ' || g || ': server created and joined the tailnet', 'system'
           FROM generate_series(1, $1) g`,
        [events],
      );
      // What one replay of the whole table weighs on the wire (the `id:`/`data:` framing included, roughly).
      const [{ bytes }] = await ds.query(
        `SELECT sum(length(row_to_json(e)::text) + 20)::bigint AS bytes FROM events e`,
      );
      requestedBytes = Number(bytes) * clients;
    } finally {
      await ds.destroy();
    }

    log(`streams: ${events} events seeded; starting the API process`);
    sim = await startSimulator({ timings: ZERO_TIMINGS, seed: 1 });
    const port = await freePort();
    const env: Record<string, string> = {
      ROLE: 'api',
      EVENT_STREAM_MAX_CONNECTIONS: '100',
      EVENT_STREAM_MAX_PER_TOKEN: '10',
    };
    child = spawn(process.execPath, ['--require', 'tsx/cjs', 'src/main.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...simulatorEnv(sim),
        DATABASE_URL: databaseUrl,
        REDIS_URL,
        API_TOKEN: apiToken,
        HOST: '127.0.0.1',
        PORT: String(port),
        QUEUE_PREFIX: prefix,
        LOG_LEVEL: 'warn',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (d: Buffer) => (output = (output + d.toString()).slice(-4000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const pid = child.pid!;
    const baseUrl = `http://127.0.0.1:${port}`;
    await until(
      'the API process to be ready',
      async () => {
        if (child!.exitCode !== null) throw new Error(`the API process exited with ${child!.exitCode}:\n${output}`);
        return (await fetch(`${baseUrl}/readyz`).catch(() => undefined))?.status === 200;
      },
      60_000,
      100,
    );

    // EVENT_STREAM_MAX_PER_TOKEN streams per token: enough read tokens for every client.
    const admin = api(baseUrl, apiToken);
    const tokens: string[] = [];
    for (let i = 0; i < Math.ceil(clients / Number(env.EVENT_STREAM_MAX_PER_TOKEN)); i++) {
      const res = await admin('POST', '/v1/tokens', { name: `bench-reader-${i}`, scope: 'read' });
      if (res.status !== 201) throw new Error(`POST /v1/tokens answered ${res.status}`);
      tokens.push(res.body.token as string);
    }
    // Warm-up: one client that reads replays the whole table, so the heap has grown to its working
    // size before the baseline; what the stalled clients add is then what they cost.
    const warmStarted = Date.now();
    const warmedUp = await readWholeReplay(baseUrl, apiToken, events);
    log(`streams: warm-up: one reading client got ${warmedUp} events in ${((Date.now() - warmStarted) / 1000).toFixed(1)} s`);
    await new Promise((r) => setTimeout(r, 1000));
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      samples.push(rssOf(pid));
      await new Promise((r) => setTimeout(r, 100));
    }
    const rssBeforeBytes = median(samples);
    let rssPeakBytes = rssBeforeBytes;
    const timeline: string[] = [];
    const t0 = Date.now();
    const sampler = setInterval(() => {
      const r = rssOf(pid);
      if (process.env.TRACE) timeline.push(`${Date.now() - t0}:${(r / MB).toFixed(0)}`);
      rssPeakBytes = Math.max(rssPeakBytes, r);
    }, 20);

    log(`streams: ${clients} clients replaying ${events} events (${(requestedBytes / MB).toFixed(0)} MB asked for in all), then not reading for ${seconds} s`);
    try {
      const opened = await Promise.all(Array.from({ length: clients }, (_, i) => stalledClient(port, tokens[i % tokens.length]!)));
      sockets.push(...opened.map((o) => o.socket));
      const refused = opened.filter((o) => !/ 200 /.test(o.status));
      if (refused.length > 0) throw new Error(`${refused.length} streams were not served: ${refused[0]!.status}`);
      await new Promise((r) => setTimeout(r, seconds * 1000));
    } finally {
      clearInterval(sampler);
    }
    if (process.env.TRACE) console.log(timeline.join(' '));
    if (child.exitCode !== null) throw new Error(`the API process exited with ${child.exitCode} while clients were stalled:\n${output}`);

    log(`streams: RSS ${(rssBeforeBytes / MB).toFixed(0)} MB before, ${(rssPeakBytes / MB).toFixed(0)} MB at the peak, ${(rssOf(pid) / MB).toFixed(0)} MB now; closing`);
    const rssGrowthBytes = Math.max(0, rssPeakBytes - rssBeforeBytes);
    const growthMb = rssGrowthBytes / MB;
    const rows: Row[] = [
      {
        bench: 'streams',
        metric: `event stream: RSS growth with ${clients} stalled clients (${Math.round(events / 1000)}k events)`,
        value: `${growthMb.toFixed(1)} MB`,
        target: `< ${TARGET_GROWTH_MB} MB`,
        met: growthMb < TARGET_GROWTH_MB,
        required: true,
      },
      {
        bench: 'streams',
        metric: 'event stream: API process RSS before → peak',
        value: `${(rssBeforeBytes / MB).toFixed(0)} → ${(rssPeakBytes / MB).toFixed(0)} MB`,
      },
      {
        bench: 'streams',
        metric: `event stream: replay bytes the ${clients} clients asked for`,
        value: `${(requestedBytes / MB).toFixed(0)} MB`,
      },
    ];
    return { clients, events, seconds, requestedBytes, rssBeforeBytes, rssPeakBytes, rssGrowthBytes, env, rows };
  } finally {
    const closing = Date.now();
    await close();
    forget();
    log(`streams: cleaned up in ${((Date.now() - closing) / 1000).toFixed(1)} s`);
  }
}

if (require.main === module) {
  runStreamsBench({ clients: numberArg('clients', 50), events: numberArg('events', 30_000), seconds: numberArg('seconds', 8) })
    .then((r) => {
      console.log(table(r.rows));
      const { rows, ...data } = r;
      console.log(`\nWrote ${writeResult('streams', { at: new Date().toISOString(), ...data })}`);
      // A missed target fails the run, as in `npm run bench`.
      if (missedRequired(rows).length > 0) process.exitCode = 1;
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
