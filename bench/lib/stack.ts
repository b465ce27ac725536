import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../../src/db/admin';
import { silentLogger } from '../../src/lib/logger';
import { deleteRedisPrefix as deleteRedisKeys } from '../../src/lib/redis-keys';
import { createTailfleet, type Tailfleet, type TailfleetOverrides } from '../../src/server';
import { simulatorEnv, startSimulator, type RunningSimulator, type SimProjectInput, type SimTimingsInput } from '../../src/simulator';

export const ADMIN_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** No simulated waiting at all: what is left is tailfleet's own cost (queue, database, HTTP). */
export const ZERO_TIMINGS: SimTimingsInput = {
  actionDurationMs: 0,
  bootMs: 0,
  enrollDelayMs: 0,
  shutdownMs: 0,
  ignoreAcpiRate: 0,
  rateLimit: { limit: 1_000_000_000, refillPerSecond: 1_000_000_000 },
};

/** Hetzner's real budget per token: 3600 requests an hour, refilled one a second. */
export const HETZNER_RATE_LIMIT = { limit: 3600, refillPerSecond: 1 };

// An interrupted bench (Ctrl-C) still drops its databases and Redis keys.
const open = new Set<() => Promise<void>>();
let handlersInstalled = false;
/** Runs `close` on SIGINT/SIGTERM; the returned function forgets it (once the bench closed by itself). */
export function closeOnSignal(close: () => Promise<void>): () => void {
  if (!handlersInstalled) {
    handlersInstalled = true;
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        process.stderr.write(`\n${signal}: cleaning up ${open.size} bench stack(s)\n`);
        void Promise.allSettled([...open].map((c) => c())).then(() => process.exit(130));
      });
    }
  }
  open.add(close);
  return () => {
    open.delete(close);
  };
}

export interface BenchStack<S = RunningSimulator> {
  label: string;
  sim: S;
  prefix: string;
  apiToken: string;
  databaseUrl: string;
  config: Config;
  tf: Tailfleet;
  /** Stops tailfleet and the simulator, drops the database and deletes the Redis prefix. */
  close(): Promise<void>;
}

/**
 * One tailfleet built through the composition root (role all) against its own database, its own
 * Redis prefix and an in-process simulator, with logging off so the numbers measure the service.
 */
export function startBenchStack(label: string, opts: BenchStackOptions = {}): Promise<BenchStack> {
  return startStack(label, opts, startSimulator);
}

/**
 * The same stack with the simulator in a process of its own (`npm run simulator`), for benches that
 * measure tailfleet's CPU: the cloud's work (serialising listings, its timers) is then not counted as
 * tailfleet's, as in production, where it runs on Hetzner's and Tailscale's machines. Its own CPU is
 * read from /proc for the row beside.
 */
export function startBenchStackWithSimulatorProcess(label: string, opts: Omit<BenchStackOptions, 'projects'> = {}): Promise<BenchStack<SimulatorProcess>> {
  return startStack(label, opts, startSimulatorProcess);
}

interface BenchStackOptions {
  timings?: SimTimingsInput;
  env?: Record<string, string>;
  overrides?: TailfleetOverrides;
  /** Hetzner projects of the simulator, given to tailfleet as HETZNER_PROJECTS (default: one, HETZNER_API_TOKEN). */
  projects?: SimProjectInput[];
}

async function startStack<S extends { hetznerUrl: string; tailscaleUrl: string; close(): Promise<void> }>(
  label: string,
  opts: BenchStackOptions,
  simulator: (o: { timings: SimTimingsInput; seed: number; projects?: SimProjectInput[] }) => Promise<S>,
): Promise<BenchStack<S>> {
  const dbName = scratchDatabaseName(`bench_${label}`);
  const databaseUrl = await createDatabase(ADMIN_DATABASE_URL, dbName);
  const prefix = `tf-bench-${label}-${randomBytes(4).toString('hex')}`;
  const apiToken = randomBytes(24).toString('hex');
  let sim: S | undefined;
  let tf: Tailfleet | undefined;
  let forget: () => void = () => undefined;
  const close = async () => {
    forget();
    await tf?.stop().catch(() => undefined);
    await sim?.close().catch(() => undefined);
    await deleteRedisPrefix(prefix).catch(() => undefined);
    await dropDatabase(ADMIN_DATABASE_URL, dbName);
  };
  forget = closeOnSignal(close);
  try {
    sim = await simulator({ timings: opts.timings ?? ZERO_TIMINGS, seed: 1, projects: opts.projects });
    const projectEnv = opts.projects
      ? { HETZNER_API_TOKEN: '', HETZNER_PROJECTS: opts.projects.map((p) => `${p.name}=${p.token}`).join(',') }
      : {};
    const config = loadConfig({
      DATABASE_URL: databaseUrl,
      REDIS_URL,
      ...simulatorEnv(sim),
      API_TOKEN: apiToken,
      HOST: '127.0.0.1',
      PORT: '0',
      QUEUE_PREFIX: prefix,
      POLL_INTERVAL_MS: '10',
      RECONCILE_INTERVAL_SECONDS: '0',
      LOG_LEVEL: 'silent',
      ...projectEnv,
      ...opts.env,
    });
    tf = createTailfleet(config, { logger: silentLogger, ...opts.overrides });
    await tf.start();
    return { label, sim, prefix, apiToken, databaseUrl, config, tf, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The simulator as `npm run simulator` runs it, in a child process, and what the benches ask of it. */
export interface SimulatorProcess {
  hetznerUrl: string;
  tailscaleUrl: string;
  /** Requests by route since the last reset (its control API). */
  requestCounts(): Promise<Record<string, number>>;
  resetRequestCounts(): Promise<void>;
  /** CPU the process has used so far (user + system), ms, from /proc. */
  cpuMs(): number;
  close(): Promise<void>;
}

async function startSimulatorProcess(o: { timings: SimTimingsInput; seed: number }): Promise<SimulatorProcess> {
  const root = join(__dirname, '..', '..');
  // tsx as a loader in the one process (its CLI would put the simulator in a grandchild, out of /proc/<pid>).
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/simulator/main.ts')], {
    cwd: root,
    env: { ...process.env, SIM_PORT: '0', SIM_SEED: String(o.seed), SIM_TIMINGS: JSON.stringify(o.timings) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => fail(new Error(`the simulator did not start in 30 s: ${err.slice(-500)}`)), 30_000);
    const fail = (e: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(e);
    };
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => fail(new Error(`the simulator exited (${code}) before it listened: ${err.slice(-500)}`)));
  });
  child.stdout!.resume();
  const control = async (method: string, path: string): Promise<any> => {
    const res = await fetch(`${url}/_sim${path}`, { method });
    if (!res.ok) throw new Error(`simulator ${method} /_sim${path} → ${res.status}`);
    return res.json();
  };
  const ticksPerMs = 100 / 1000; // USER_HZ: 100 on Linux
  return {
    hetznerUrl: `${url}/hetzner/v1`,
    tailscaleUrl: `${url}/tailscale/api/v2`,
    requestCounts: async () => (await control('GET', '/requests')).counts,
    resetRequestCounts: async () => void (await control('POST', '/requests/reset')),
    cpuMs: () => {
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / ticksPerMs;
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Deletes this run's keys from the shared Redis (src/lib/redis-keys.ts). */
export function deleteRedisPrefix(prefix: string): Promise<void> {
  return deleteRedisKeys(REDIS_URL, prefix);
}

/** A keep-alive JSON client for the tailfleet API (undici's global fetch pools connections). */
export function api(baseUrl: string, token: string) {
  return async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
}

/**
 * Like `api`, over at most `connections` keep-alive sockets: any number of requests may be in flight
 * at once, as behind a proxy, without a thousand connects overflowing the server's accept queue.
 * `close()` destroys the sockets.
 */
export function pooledApi(baseUrl: string, token: string, connections: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const call = (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        `${baseUrl}${path}`,
        {
          method,
          agent,
          headers: {
            authorization: `Bearer ${token}`,
            'content-length': payload === undefined ? 0 : Buffer.byteLength(payload),
            ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            try {
              resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined });
            } catch (err) {
              reject(err as Error);
            }
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  return Object.assign(call, { close: () => agent.destroy() });
}

/** Polls until `check` is true or the deadline passes (benches must end by themselves). */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`bench: timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** 429 answers tailfleet's own metrics saw from a cloud (the clients wait and retry, so each costs a request). */
export async function cloud429s(tf: Tailfleet, cloud: 'hetzner' | 'tailscale' = 'hetzner'): Promise<number> {
  return (await tf.metrics.cloudRequests.get()).values
    .filter((v) => v.labels.api === cloud && String(v.labels.status) === '429')
    .reduce((a, v) => a + v.value, 0);
}

/** The simulator's request counters split by cloud; Tailscale's OAuth token requests are counted apart. */
export function cloudRequestCounts(counts: Record<string, number>): {
  hetzner: number;
  tailscale: number;
  oauth: number;
  byRoute: Record<string, number>;
} {
  let hetzner = 0;
  let tailscale = 0;
  let oauth = 0;
  for (const [key, n] of Object.entries(counts)) {
    if (key.includes('/oauth/')) oauth += n;
    else if (key.includes(' /hetzner/')) hetzner += n;
    else if (key.includes(' /tailscale/')) tailscale += n;
  }
  return { hetzner, tailscale, oauth, byRoute: { ...counts } };
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
export async function inBatches<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}
