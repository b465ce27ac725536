import { randomBytes } from 'node:crypto';
import { contractOf, type ContractValidator } from '../helpers/contract';
import { loadConfig, type Config } from '../../src/config';
import { jsonOf } from '../../src/lib/json';
import { silentLogger } from '../../src/lib/logger';
import { deleteRedisPrefix as deleteRedisKeys } from '../../src/lib/redis-keys';
import { createTailfleet, type Tailfleet, type TailfleetOverrides } from '../../src/server';
import { simulatorEnv, startSimulator, type RunningSimulator, type SimProjectInput, type SimTimingsInput } from '../../src/simulator';
import { createTestDatabase, type TestDatabase } from '../helpers/db';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Simulator timings small enough for a fast suite, large enough that jobs really wait on actions. */
export const TINY_TIMINGS: SimTimingsInput = {
  actionDurationMs: 20,
  imageMsPerGb: 1,
  bootMs: 20,
  enrollDelayMs: 20,
  shutdownMs: 20,
};

/** Environment for a tailfleet process pointed at this suite's database, Redis prefix and simulator. */
export function stackEnv(ctx: { db: TestDatabase; sim: RunningSimulator; prefix: string; apiToken: string }, extra: Record<string, string> = {}) {
  return {
    DATABASE_URL: ctx.db.url,
    REDIS_URL,
    ...simulatorEnv(ctx.sim),
    API_TOKEN: ctx.apiToken,
    HOST: '127.0.0.1',
    PORT: '0',
    QUEUE_PREFIX: ctx.prefix,
    POLL_INTERVAL_MS: '10',
    JOB_ATTEMPTS: '3',
    JOB_BACKOFF_MS: '20',
    SHUTDOWN_TIMEOUT_SECONDS: '2',
    WORKER_CONCURRENCY: '5',
    LOG_LEVEL: 'silent',
    ...extra,
  };
}

export interface Suite {
  db: TestDatabase;
  sim: RunningSimulator;
  prefix: string;
  apiToken: string;
  /** Config as the suite's processes see it (through loadConfig, like production). */
  config(extra?: Record<string, string>): Config;
  /** A tailfleet built through the composition root, started; stopped by close(). */
  launch(opts?: { env?: Record<string, string>; overrides?: TailfleetOverrides }): Promise<Tailfleet>;
  close(): Promise<void>;
}

export interface SuiteOptions {
  /** Hetzner projects of the simulator; the suite's processes get HETZNER_PROJECTS instead of HETZNER_API_TOKEN. */
  projects?: SimProjectInput[];
  /** A simulator shared with another suite (another fleet in the same cloud); its owner closes it. */
  sim?: RunningSimulator;
}

/** Per-suite database, Redis prefix and simulator; every tailfleet it launches is stopped at close(). */
export async function createSuite(label: string, timings: SimTimingsInput = TINY_TIMINGS, opts: SuiteOptions = {}): Promise<Suite> {
  const db = await createTestDatabase(label);
  const sim = opts.sim ?? (await startSimulator({ timings, projects: opts.projects }));
  const ownSim = opts.sim === undefined;
  const prefix = `tf-test-${label}-${randomBytes(4).toString('hex')}`;
  const apiToken = randomBytes(24).toString('hex');
  const launched: Tailfleet[] = [];
  const ctx = { db, sim, prefix, apiToken };

  const projectEnv: Record<string, string> = opts.projects ? { HETZNER_API_TOKEN: '', HETZNER_PROJECTS: opts.projects.map((p) => `${p.name}=${p.token}`).join(',') } : {};
  const config = (extra: Record<string, string> = {}) => loadConfig(stackEnv(ctx, { ...projectEnv, ...extra }));
  return {
    ...ctx,
    config,
    async launch(opts = {}) {
      const tf = createTailfleet(config(opts.env), {
        logger: silentLogger,
        // Retries of the clients themselves in milliseconds, not seconds.
        hetzner: { retryBaseDelayMs: 5, retryMaxDelayMs: 20, maxRateLimitWaitMs: 200 },
        tailscale: { retryBaseDelayMs: 5, retryMaxDelayMs: 20, maxRateLimitWaitMs: 200 },
        ...opts.overrides,
        worker: { lockDurationMs: 2000, stalledIntervalMs: 500, ...opts.overrides?.worker },
      });
      launched.push(tf);
      await tf.start();
      return tf;
    },
    async close() {
      await Promise.allSettled(launched.map((tf) => tf.stop()));
      if (ownSim) await sim.close();
      await deleteRedisPrefix(prefix);
      await db.drop();
    },
  };
}

/** Deletes this run's keys from the shared Redis (src/lib/redis-keys.ts). */
export function deleteRedisPrefix(prefix: string): Promise<void> {
  return deleteRedisKeys(REDIS_URL, prefix);
}

export { waitFor } from '../helpers/wait';

/** Minimal client for the tailfleet HTTP API. */
/** A client for a running tailfleet; every answer is checked against the document it serves. */
export function apiClient(baseUrl: string, token: string) {
  let contract: Promise<ContractValidator> | undefined;
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json: any = jsonOf(text, (raw) => raw);
    contract ??= contractOf(baseUrl);
    const wrong = (await contract).check(method, path, {
      status: res.status,
      contentType: res.headers.get('content-type'),
      body: text ? json : undefined,
    });
    if (wrong.length > 0) throw new Error(`The answer breaks the OpenAPI document:\n${wrong.join('\n')}\n${text.slice(0, 500)}`);
    return { status: res.status, headers: res.headers, body: json };
  };
  return {
    call,
    get: (path: string) => call('GET', path),
    post: (path: string, body?: unknown, headers?: Record<string, string>) => call('POST', path, body ?? {}, headers),
  };
}

export type ApiClient = ReturnType<typeof apiClient>;
