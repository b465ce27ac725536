import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Queue } from 'bullmq';
import { Client } from 'pg';
import { TailscaleClient } from '../../src/clients/tailscale/tailscale.client';
import { loadConfig } from '../../src/config';
import { silentLogger } from '../../src/lib/logger';
import { OPERATION_QUEUES, QUEUE_NAMES } from '../../src/queues/queues';
import { createTailfleet, type Tailfleet } from '../../src/server';
import { SIM_DEFAULT_CREDENTIALS, startSimulator, type RunningSimulator, type SimTimingsInput } from '../../src/simulator';
import { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from '../helpers/db';
import { Prng, seedFrom } from '../fuzz/prng';
import { FaultLedger } from './fault-ledger';
import { checkFinalOutcomes, checkInvariants, checkWebhookOutcomes, type InvariantReport, type ReceivedWebhook } from './invariants';
import { RedisProcess, WorkerProcess, freePort, until } from './processes';

// 200 agents through provision and a mix of stop/start/destroy, with the worker processes SIGKILLed
// twice and restarted, three rolling (SIGTERM) restarts during the provisions, the suite's own Redis
// SIGKILLed and restarted on its append-only file (requests arriving meanwhile are accepted), then
// wiped with FLUSHALL while operations are queued and running, every PostgreSQL connection of the
// database terminated once, a hand-made job that does not match its operation, and the simulated
// clouds answering 20% of requests with 5xx, in bursts with 429, and with servers that ignore ACPI
// shutdown. Then: every accepted request finished, the clouds match the database, nothing orphaned,
// nothing lost, and no operation ended twice (in its events, or in the webhooks a receiver got).
// Every fault fires on an event seen in the database, the queues or the simulator (a count of
// operations reached, work seen in flight), polled with a deadline, never at a time: on a faster or
// slower machine the same faults strike the same kind of moment. A fault that needs work in flight
// holds the simulated cloud's actions slow until it sees it, so that moment cannot slip past.
// CHAOS_SEED=<n> replays the same plan (the timing of processes stays the machine's own);
// CHAOS_AGENTS=<n> changes the fleet size, CHAOS_DEBUG=1 adds progress lines to the timeline and
// CHAOS_KEEP_LOGS=1 keeps the worker and Redis logs of a passing run.

const AGENTS = Number(process.env.CHAOS_AGENTS ?? 200);
const NO_KEY_AGENTS = 6; // their auth key is revoked behind tailfleet's back: the server never joins → rollback
// Hetzner refuses the image (a snapshot id that does not exist, 422) when the server is created: a
// permanent failure → rollback. (A bad location or server type is refused by the API before anything is accepted.)
const BAD_IMAGE_AGENTS = 6;
const CREATE_CONCURRENCY = 8;
const SCRIPT_CONCURRENCY = 24;

/** The first project holds a third of the fleet at most: the provisions meet its limit and move on to the second. */
const PROJECTS = [
  { name: 'alpha', token: 'chaos-alpha', maxServers: Math.floor(AGENTS / 3) },
  { name: 'beta', token: 'chaos-beta' },
];

const TIMINGS: SimTimingsInput = {
  actionDurationMs: 40,
  // The no-key agents' boots are held (HELD_BOOT_MS) until their keys are revoked.
  bootMs: 150,
  enrollDelayMs: 30,
  shutdownMs: 40,
  imageMsPerGb: 1,
  ignoreAcpiRate: 0.25,
  rateLimit: { limit: 1_000_000, refillPerSecond: 1_000_000 },
};

// While a fault waits for work in flight, every cloud action takes this long: operations stay running
// (and their jobs active) long enough to be seen, and the next ones queue behind them.
const HELD_ACTION_MS = 1_500;
// The no-key agents' servers boot only after this (never, within the run): their keys are revoked
// while they wait, whatever the speed of the machine, and the device never joins.
const HELD_BOOT_MS = 3_600_000;
// How long a fault may wait for what it needs once its count is reached, before the run fails.
const ARMED_DEADLINE_MS = 60_000;

type ScriptKind =
  | 'stop-start'
  | 'stop-destroy'
  | 'destroy'
  | 'stop-race-destroy'
  | 'stop-start-stop'
  | 'stop-twice-same-key'
  | 'hibernate-wake'
  | 'stop-hibernate'
  | 'hibernate-destroy'
  | 'idle';

interface Stats {
  http: Record<string, number>;
  accepted: Map<string, string>;
  refused409: number;
  retried503: number;
  replays: number;
  events: string[];
  kills: string[];
  redisDowntimeMs: number[];
  rollingRestarts: string[];
  redisWipes: number[];
  pgTerminated: number[];
  acpiIgnoring: Set<number>;
  revokedKeys: Set<string>;
}

/** A fault of the run and the event it fires on. */
interface Fault {
  name: string;
  /** The event it waits for: a count reached (it stays reached). */
  after: () => Promise<boolean>;
  /**
   * What must be seen at the moment it strikes (work in flight). Until it is, cloud actions are held
   * at HELD_ACTION_MS, so that work in flight stays in flight; ARMED_DEADLINE_MS at most.
   */
  during?: () => Promise<boolean>;
  /** Faults it must not overlap: while one of these is still running (a restart), it waits, unheld. */
  notDuring?: string[];
  run: () => Promise<void>;
  state: 'waiting' | 'armed' | 'striking' | 'done' | 'missed';
  armedAt?: number;
}

describe('chaos: a fleet of agents through crashes, restarts and cloud faults', function () {
  this.timeout(600_000);

  const seed = seedFrom('CHAOS_SEED');
  const apiToken = randomBytes(24).toString('hex');
  const prefix = `tf-chaos-${randomBytes(4).toString('hex')}`;
  let tmp: string;
  let db: TestDatabase | undefined;
  let redis: RedisProcess | undefined;
  let sim: RunningSimulator | undefined;
  let api: Tailfleet | undefined;
  let workers: WorkerProcess[] = [];
  // A receiver subscribed to every operation outcome: what a client of the webhooks was told.
  let receiver: Server | undefined;
  const receivedWebhooks: ReceivedWebhook[] = [];
  let passed = false;
  // The run's timeline, printed when it fails before its summary.
  let timeline: string[] = [];
  // Ends the test's background loops and waiters in `after`, also when the test failed half-way.
  let stopBackground = () => undefined as void;

  const env = (): Record<string, string> => ({
    DATABASE_URL: db!.url,
    REDIS_URL: redis!.url,
    HETZNER_API_URL: sim!.hetznerUrl,
    // Two Hetzner projects, the first of which fills up during the provisions, and two places, the
    // first of which sells out during them.
    HETZNER_PROJECTS: PROJECTS.map((p) => `${p.name}=${p.token}`).join(','),
    HETZNER_PLACEMENTS: 'fsn1:cx22,nbg1:cx22',
    TAILSCALE_API_URL: sim!.tailscaleUrl,
    TAILSCALE_OAUTH_CLIENT_ID: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
    TAILSCALE_OAUTH_CLIENT_SECRET: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
    API_TOKEN: apiToken,
    HOST: '127.0.0.1',
    PORT: '0',
    QUEUE_PREFIX: prefix,
    POLL_INTERVAL_MS: '25',
    JOB_ATTEMPTS: '4',
    JOB_BACKOFF_MS: '100',
    SHUTDOWN_TIMEOUT_SECONDS: '1',
    ENROLLMENT_TIMEOUT_SECONDS: '10',
    ACTION_TIMEOUT_SECONDS: '10',
    WORKER_CONCURRENCY: '8',
    DRAIN_TIMEOUT_SECONDS: '5',
    ROLLBACK_SWEEP_INTERVAL_SECONDS: '5',
    RELAY_INTERVAL_MS: '500',
    // Off: the drift reconciler would quietly repair whatever the pipeline got wrong, and this suite
    // is about what the job pipeline itself guarantees.
    RECONCILE_INTERVAL_SECONDS: '0',
    // The receiver is on loopback; a refused or lost delivery is tried again soon.
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_BACKOFF_MS: '100',
    LOG_LEVEL: 'warn',
  });

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'tailfleet-chaos-'));
    console.log(`      chaos seed ${seed} (replay with CHAOS_SEED=${seed}); logs in ${tmp}`);
    redis = new RedisProcess(await freePort(), tmp);
    await redis.start();
    db = await createTestDatabase('chaos', { poolSize: 5 });
    sim = await startSimulator({ timings: TIMINGS, seed, projects: PROJECTS });
    api = createTailfleet(loadConfig({ ...env(), ROLE: 'api' }), { logger: silentLogger });
    await api.start();
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          receivedWebhooks.push({
            deliveryId: String(req.headers['webhook-id']),
            type: body.type,
            eventId: String(body.data?.eventId),
            operationId: body.data?.operation?.id ?? null,
            status: body.data?.operation?.status ?? null,
          });
          res.statusCode = 204;
        } catch {
          res.statusCode = 400;
        }
        res.end();
      });
    });
    await new Promise<void>((resolve) => receiver!.listen(0, '127.0.0.1', resolve));
    const subscribed = await fetch(`${api.url}/v1/webhooks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/tailfleet`,
        events: ['operation.succeeded', 'operation.failed', 'operation.cancelled'],
      }),
    });
    expect(subscribed.status, `webhook subscription: ${await subscribed.clone().text()}`).to.equal(201);
    workers = ['w1', 'w2'].map((name) => new WorkerProcess(name, { ...env(), ROLE: 'worker' }, path.join(tmp, `${name}.log`)));
    await Promise.all(workers.map((w) => w.start()));
  });

  after(async () => {
    stopBackground();
    // Children first, whatever happened: no worker or Redis may outlive the suite.
    await Promise.allSettled(workers.map((w) => w.stop()));
    if (!passed) {
      console.log(`      --- timeline ---\n      ${timeline.join('\n      ')}`);
      for (const w of workers) console.log(`      --- last output of ${w.name} ---\n${w.lastOutput(15)}`);
    }
    await api?.stop().catch(() => undefined);
    receiver?.closeAllConnections();
    await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
    await redis?.stop();
    await sim?.close();
    await db?.drop();
    if (passed && tmp && !process.env.CHAOS_KEEP_LOGS) rmSync(tmp, { recursive: true, force: true });
  });

  it(`${AGENTS} agents: every operation finishes, the clouds match the database, nothing orphaned or lost`, async () => {
    const started = Date.now();
    const rng = new Prng(seed);
    const ds = db!.dataSource;
    const control = sim!.control;
    const faults = new FaultLedger(control);
    const queues = api!.queues;
    const stats: Stats = {
      http: {},
      accepted: new Map(),
      refused409: 0,
      retried503: 0,
      replays: 0,
      events: [],
      kills: [],
      redisDowntimeMs: [],
      rollingRestarts: [],
      redisWipes: [],
      pgTerminated: [],
      acpiIgnoring: new Set(),
      revokedKeys: new Set(),
    };
    timeline = stats.events;
    const note = (what: string) => stats.events.push(`${((Date.now() - started) / 1000).toFixed(1)}s ${what}`);

    // ---- HTTP client of the API, retrying 503s (Redis or PostgreSQL away) once the API is ready again.
    async function call(method: string, urlPath: string, body?: unknown, headers: Record<string, string> = {}) {
      for (let attempt = 0; ; attempt++) {
        let status: number;
        let json: any;
        try {
          const res = await fetch(`${api!.url}${urlPath}`, {
            method,
            headers: { authorization: `Bearer ${apiToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
            body: body === undefined ? undefined : JSON.stringify(body),
          });
          status = res.status;
          const text = await res.text();
          json = text ? JSON.parse(text) : undefined;
        } catch (err) {
          throw new Error(`${method} ${urlPath}: ${(err as Error).message}`, { cause: err });
        }
        stats.http[status] = (stats.http[status] ?? 0) + 1;
        if (status !== 503 || attempt >= 20) return { status, body: json };
        stats.retried503++;
        // A refused request changed nothing; ask again once the API says both stores answer.
        await until('the API to be ready again', async () => (await fetch(`${api!.url}/readyz`)).status === 200, { timeoutMs: 60_000, intervalMs: 50 });
      }
    }

    // ---- Operation waiters: one query for everything pending instead of a poll per operation.
    const waiting = new Map<string, { resolve: (v: { status: string; error: string | null }) => void; timer: NodeJS.Timeout }>();
    let pollerStopped = false;
    let observerStopped = false;
    stopBackground = () => {
      pollerStopped = true;
      observerStopped = true;
      for (const w of waiting.values()) clearTimeout(w.timer);
      waiting.clear();
    };
    const poller = (async () => {
      while (!pollerStopped) {
        if (waiting.size > 0) {
          try {
            const rows: { id: string; status: string; error: string | null }[] = await ds.query(
              `SELECT id, status, error FROM operations WHERE id = ANY($1::uuid[]) AND status IN ('succeeded', 'failed', 'cancelled')`,
              [[...waiting.keys()]],
            );
            for (const row of rows) {
              waiting.get(row.id)?.resolve(row);
              waiting.delete(row.id);
            }
          } catch {
            // Connections dropped on purpose: the next round asks again.
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    // What a stuck operation looked like in both stores, so a timeout explains itself.
    async function describeStuck(operationId: string): Promise<string> {
      const lines: string[] = [];
      const attempt = async (what: string, fn: () => Promise<unknown>) => {
        try {
          lines.push(`${what}: ${JSON.stringify(await fn())}`);
        } catch (err) {
          lines.push(`${what}: (could not read: ${(err as Error).message})`);
        }
      };
      let op: any;
      await attempt('operation', async () => {
        [op] = await ds.query(
          `SELECT id, type, status, attempts, error, current_step, failed_step, queue_job_id, provisioning_job_id,
                  requested_at, started_at, finished_at, updated_at FROM operations WHERE id = $1`,
          [operationId],
        );
        return op ?? null;
      });
      await attempt('operation events', () =>
        ds.query(`SELECT entity_type, from_status, to_status, reason, at FROM events WHERE operation_id = $1 OR entity_id = $1 ORDER BY at, id`, [operationId]),
      );
      if (op?.provisioning_job_id) {
        await attempt('provisioning job', async () =>
          (await ds.query(`SELECT id, status, attempts, error, failed_step, updated_at FROM provisioning_jobs WHERE id = $1`, [op.provisioning_job_id]))[0] ?? null,
        );
      }
      const queue = op ? (queues as unknown as Record<string, Queue | undefined>)[op.type] : undefined;
      if (queue && op.queue_job_id) {
        const jobId = op.queue_job_id as string;
        await attempt('queue job', async () => {
          const job = await queue.getJob(jobId);
          return {
            state: await queue.getJobState(jobId),
            attemptsMade: job?.attemptsMade,
            attemptsStarted: job?.attemptsStarted,
            stalledCounter: job?.stalledCounter,
            failedReason: job?.failedReason,
            processedOn: job?.processedOn,
            finishedOn: job?.finishedOn,
            delay: job?.delay,
            rateLimitTtl: await queue.getRateLimitTtl(),
          };
        });
        await attempt('queue job log', async () => (await queue.getJobLogs(jobId)).logs);
      }
      return lines.join('\n');
    }
    const finished = (operationId: string, timeoutMs = 240_000) =>
      new Promise<{ status: string; error: string | null }>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(operationId);
          void describeStuck(operationId).then((detail) =>
            reject(new Error(`operation ${operationId} did not finish within ${timeoutMs} ms\n${detail}`)),
          );
        }, timeoutMs);
        waiting.set(operationId, {
          timer,
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v);
          },
        });
      });

    const accept = (res: { status: number; body: any }, what: string): string | undefined => {
      if (res.status === 200 || res.status === 201 || res.status === 202) {
        const id = res.body.operation.id as string;
        stats.accepted.set(id, what);
        return id;
      }
      if (res.status === 409) {
        stats.refused409++;
        return undefined;
      }
      throw new Error(`${what}: unexpected ${res.status} ${JSON.stringify(res.body)}`);
    };

    // ---- Background observer: the faults' events and simulator facts that vanish with servers.
    const triggers: Fault[] = [];
    const fault = (f: Omit<Fault, 'state'>): Fault => ({ ...f, state: 'waiting' });
    const faultState = (name: string) => triggers.find((t) => t.name === name)?.state;
    const failures: Error[] = [];
    // Who holds the cloud's actions slow; full speed again when nobody does.
    const holds = new Set<string>();
    const holdCloud = (who: string, on: boolean) => {
      const was = holds.size > 0;
      if (on) holds.add(who);
      else holds.delete(who);
      if (was === holds.size > 0) return;
      control.setTimings({ actionDurationMs: holds.size > 0 ? HELD_ACTION_MS : TIMINGS.actionDurationMs! });
      note(holds.size > 0 ? `cloud actions held at ${HELD_ACTION_MS} ms (${who} waits for work in flight)` : 'cloud actions at full speed again');
    };
    const strike = (t: Fault) => {
      t.state = 'striking';
      holdCloud(t.name, false);
      triggerRuns.push(
        t.run().then(
          () => {
            t.state = 'done';
          },
          (err: Error) => {
            t.state = 'done';
            failures.push(new Error(`${t.name}: ${err.message}`));
          },
        ),
      );
    };
    /** Waits until every fault of a phase struck and finished, and says which did not. */
    const phaseFaults = async (phase: string, names: readonly string[]) => {
      const mine = triggers.filter((t) => names.includes(t.name));
      // The deadline covers a fault armed just now (ARMED_DEADLINE_MS) and then its run (a restart).
      await until(`the ${phase} faults to fire`, () => mine.every((t) => t.state === 'done' || t.state === 'missed'), {
        timeoutMs: ARMED_DEADLINE_MS + 60_000,
        intervalMs: 100,
      }).catch(() => undefined);
      expect(
        mine.filter((t) => t.state !== 'done').map((t) => `${t.name} (${t.state})`),
        `${phase} faults that never fired (errors in the triggers: ${failures.map((e) => e.message).join(' | ') || 'none'})`,
      ).to.deep.equal([]);
    };
    const triggerRuns: Promise<unknown>[] = [];
    let revokedDone = 0;
    const saboteur = new TailscaleClient({
      baseUrl: sim!.tailscaleUrl,
      clientId: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
      clientSecret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
      retryBaseDelayMs: 5,
      retryMaxDelayMs: 20,
      maxRetries: 10,
    });
    let lastProgress = Date.now();
    const observer = (async () => {
      while (!observerStopped) {
        if (process.env.CHAOS_DEBUG && Date.now() - lastProgress > 3000) {
          lastProgress = Date.now();
          const rows = await ds.query(`SELECT type::text || '/' || status::text AS k, count(*)::int AS n FROM operations GROUP BY 1 ORDER BY 1`).catch(() => []);
          const counts = await queues.provision.getJobCounts().catch(() => ({}));
          note(`progress ${rows.map((r: any) => `${r.k}=${r.n}`).join(' ')} provisionQ=${JSON.stringify(counts)}`);
        }
        try {
          const state = control.state();
          for (const s of state.servers) if (s._sim.ignoresAcpi) stats.acpiIgnoring.add(s.id);
          // Revoke the auth keys of the no-key agents before their servers boot: the device never joins.
          for (const key of state.authKeys) {
            if (key.description?.startsWith('tailfleet nokey-') && !key.used && !stats.revokedKeys.has(key.id)) {
              stats.revokedKeys.add(key.id);
              triggerRuns.push(
                saboteur.deleteAuthKey(key.id).then(
                  () => revokedDone++,
                  (err: Error) => failures.push(new Error(`revoke key ${key.id}: ${err.message}`)),
                ),
              );
            }
          }
          for (const t of triggers) {
            // A condition that cannot be read right now (Redis or PostgreSQL away) is read again next round.
            if (t.state === 'waiting' && (await t.after().catch(() => false))) {
              t.state = 'armed';
              t.armedAt = Date.now();
            }
            if (t.state !== 'armed') continue;
            if (t.notDuring?.some((name) => faultState(name) === 'striking')) {
              // Its deadline counts from when it may strike.
              t.armedAt = Date.now();
              holdCloud(t.name, false);
              continue;
            }
            // Run beside the loop, so revoking keys and sampling servers go on during a restart.
            if (!t.during || (await t.during().catch(() => false))) strike(t);
            else if (Date.now() - t.armedAt! > ARMED_DEADLINE_MS) {
              t.state = 'missed';
              holdCloud(t.name, false);
              failures.push(new Error(`${t.name}: its count was reached, but what it needs was not seen within ${ARMED_DEADLINE_MS} ms`));
            } else holdCloud(t.name, true);
          }
        } catch (err) {
          failures.push(err as Error);
        }
        // Fast while the no-key agents' keys may still need revoking or a fault waits for work in
        // flight; otherwise only the counts and the ACPI sampling remain, and state() over thousands
        // of actions is not free.
        const armed = triggers.some((t) => t.state === 'armed');
        await new Promise((r) => setTimeout(r, revokedDone >= NO_KEY_AGENTS && !armed ? 200 : 20));
      }
    })();

    const countJobs = async (status: string[]) =>
      Number((await ds.query(`SELECT count(*)::int AS n FROM provisioning_jobs WHERE status = ANY($1)`, [status]))[0].n);
    const countOps = async (types: readonly string[], status: string[]) =>
      Number(
        (await ds.query(`SELECT count(*)::int AS n FROM operations WHERE type = ANY($1) AND status = ANY($2::operation_status[])`, [types, status]))[0].n,
      );

    async function killWorker(w: WorkerProcess, why: string) {
      const pid = w.pid;
      await w.kill('SIGKILL');
      stats.kills.push(`${w.name} (pid ${pid}) ${why}`);
      note(`SIGKILL ${w.name} pid ${pid} (${why})`);
      await w.start();
      note(`${w.name} restarted as pid ${w.pid}`);
    }

    /** A deploy: SIGTERM, the worker drains (jobs cut at the deadline go back to waiting), then starts again. */
    async function rollingRestart(w: WorkerProcess, why: string) {
      const pid = w.pid;
      note(`SIGTERM ${w.name} pid ${pid} (${why})`);
      await w.kill('SIGTERM');
      await w.start();
      note(`${w.name} restarted as pid ${w.pid}`);
      // Counted once the new process is up: the next restart's trigger waits for it.
      stats.rollingRestarts.push(`${w.name} (pid ${pid}) ${why}`);
    }

    /** Redis loses everything at once; PostgreSQL still holds every accepted operation. */
    async function wipeRedis(why: string) {
      const before = await allJobIds();
      const { execFileSync } = await import('node:child_process');
      execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(new URL(redis!.url).port), 'FLUSHALL']);
      stats.redisWipes.push(before.size);
      note(`FLUSHALL (${why}); ${before.size} jobs were in Redis`);
    }

    async function dropPostgres(why: string) {
      const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
      await admin.connect();
      try {
        const res = await admin.query(
          `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
          [db!.name],
        );
        const n = res.rows.filter((r) => r.ok).length;
        stats.pgTerminated.push(n);
        note(`terminated ${n} PostgreSQL connections (${why})`);
      } finally {
        await admin.end();
      }
    }

    const acceptedDuringOutage: string[] = [];
    const allJobIds = async () => {
      const ids: string[] = [];
      for (const name of QUEUE_NAMES) {
        const jobs = await queues[name].getJobs(['active', 'waiting', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children']);
        for (const j of jobs) if (j) ids.push(`${name}/${j.id}`);
      }
      return new Set(ids);
    };

    async function restartRedis(why: string) {
      const before = await allJobIds();
      const down = Date.now();
      await redis!.kill('SIGKILL');
      note(`SIGKILL redis-server (${why}); ${before.size} jobs in Redis`);
      // While Redis is gone the API says so, and still accepts work: PostgreSQL holds it, and the
      // relay delivers it once Redis is back.
      const ready = await fetch(`${api!.url}/readyz`);
      expect(ready.status, 'readyz while Redis is down').to.equal(503);
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${api!.url}/v1/agents`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `during-redis-outage-${i}` }),
        });
        const body = (await res.json()) as any;
        expect(res.status, `create while Redis is down: ${JSON.stringify(body)}`).to.equal(201);
        stats.accepted.set(body.operation.id, `provision during-redis-outage-${i}`);
        acceptedDuringOutage.push(body.operation.id);
      }
      await redis!.restart();
      stats.redisDowntimeMs.push(Date.now() - down);
      const after = await until('the queues to answer again', async () => allJobIds(), { timeoutMs: 30_000, intervalMs: 100 });
      const lost = [...before].filter((id) => !after.has(id));
      note(`redis-server restarted on its AOF after ${Date.now() - down} ms; ${after.size} jobs replayed`);
      expect(lost, 'jobs lost across the Redis restart').to.deep.equal([]);
      expect((await ds.query(`SELECT count(*)::int AS n FROM agents WHERE name LIKE 'during-redis-outage-%'`))[0].n).to.equal(3);
    }

    // ---- Cloud faults for the rest of the run: 20% 5xx on both APIs, in two statuses each.
    const enableFaults = () => {
      faults.add({ route: '/hetzner/v1', errorRate: 0.1, status: 503, times: 1e9, message: 'chaos:5xx:hetzner:503' });
      faults.add({ route: '/hetzner/v1', errorRate: 0.1 / 0.9, status: 500, times: 1e9, message: 'chaos:5xx:hetzner:500' });
      faults.add({ route: '/tailscale/api/v2', errorRate: 0.1, status: 502, times: 1e9, message: 'chaos:5xx:tailscale:502' });
      faults.add({ route: '/tailscale/api/v2', errorRate: 0.1 / 0.9, status: 500, times: 1e9, message: 'chaos:5xx:tailscale:500' });
      note('cloud faults on: 20% 5xx');
    };
    let bursts = 0;
    const burst429 = (why: string) => {
      bursts++;
      faults.add({ route: '/hetzner/v1', status: 429, times: 40, message: `chaos:429:hetzner:${bursts}` });
      faults.add({ route: '/tailscale/api/v2', status: 429, times: 15, message: `chaos:429:tailscale:${bursts}` });
      note(`429 burst #${bursts} (${why})`);
    };

    // ================= Phase 1: provision the fleet =================
    const specs = Array.from({ length: AGENTS }, (_, i) => {
      if (i < NO_KEY_AGENTS) return { name: `nokey-${i}`, kind: 'nokey' as const };
      if (i < NO_KEY_AGENTS + BAD_IMAGE_AGENTS) return { name: `badimg-${i}`, kind: 'badimg' as const, image: '999999999' };
      return { name: `chaos-${i}`, kind: 'normal' as const };
    });
    const agents: { id: string; name: string; kind: string; provisioningJobId: string; operationId: string }[] = [];

    const provisioned = async (share: number) => (await countJobs(['succeeded'])) >= AGENTS * share;
    const phase1Faults = ['429 burst in phase 1', 'kill #1', 'pg drop', 'rolling restart #1', 'rolling restart #2', 'rolling restart #3', 'fsn1 sold out'];
    triggers.push(
      fault({ name: '429 burst in phase 1', after: () => provisioned(0.15), run: async () => burst429('phase 1') }),
      fault({
        name: 'kill #1',
        after: () => provisioned(0.3),
        // 70% of the provisions are still to come: with the cloud held, some are soon seen running.
        during: async () => (await queues.provision.getActiveCount()) > 0,
        run: () => killWorker(workers[0]!, 'mid-provisioning'),
      }),
      fault({ name: 'pg drop', after: () => provisioned(0.55), run: () => dropPostgres('mid-provisioning') }),
      // From here the provisions (and later wakes) fall back to nbg1.
      fault({
        name: 'fsn1 sold out',
        after: () => provisioned(0.35),
        run: async () => {
          control.setSoldOut('fsn1', true);
          note('fsn1 sold out');
        },
      }),
      // Deploys during the provisions: the other worker than the one SIGKILLed above.
      // One after the other (each waits for the previous worker to be up), early enough that all
      // three happen while provisions are still running even on a slow machine.
      ...[0.05, 0.25, 0.45].map((share, i) =>
        fault({
          name: `rolling restart #${i + 1}`,
          after: async () => stats.rollingRestarts.length === i && (await provisioned(share)),
          run: () => rollingRestart(workers[1]!, 'mid-provisioning'),
        }),
      ),
    );

    let nextSpec = 0;
    const createAgents = (upTo: number) =>
      Promise.all(
        Array.from({ length: CREATE_CONCURRENCY }, async () => {
          while (nextSpec < upTo) {
            const i = nextSpec++;
            const spec = specs[i]!;
            const body = { name: spec.name, ...('image' in spec ? { image: spec.image } : {}) };
            // Every tenth create carries an Idempotency-Key and is sent twice: one agent, one operation.
            const key = i % 10 === 3 ? `create-${spec.name}` : undefined;
            const res = await call('POST', '/v1/agents', body, key ? { 'idempotency-key': key } : {});
            expect(res.status, `create ${spec.name}: ${JSON.stringify(res.body)}`).to.equal(201);
            accept(res, `provision ${spec.name}`);
            if (key) {
              const again = await call('POST', '/v1/agents', body, { 'idempotency-key': key });
              expect(again.status, `replayed create ${spec.name}`).to.equal(200);
              expect(again.body.operation.id).to.equal(res.body.operation.id);
              stats.replays++;
            }
            agents.push({
              id: res.body.agent.id,
              name: spec.name,
              kind: spec.kind,
              provisioningJobId: res.body.provisioningJob.id,
              operationId: res.body.operation.id,
            });
          }
        }),
      );
    // The no-key agents go first, on a quiet cloud, so that each makes exactly one key, and with
    // their boots held: the observer revokes each key once it sees it, before the server can use it.
    control.setTimings({ bootMs: HELD_BOOT_MS });
    await createAgents(NO_KEY_AGENTS);
    await until('the no-key agents\' auth keys to be revoked', () => revokedDone >= NO_KEY_AGENTS, { timeoutMs: 30_000 });
    control.setTimings({ bootMs: TIMINGS.bootMs });
    enableFaults();
    await createAgents(specs.length);
    note(`${agents.length} agents created`);

    // Phase 2 works on what phase 1 made of the ordinary agents; the no-key ones take their
    // enrollment timeouts meanwhile.
    const ordinary = agents.filter((a) => a.kind !== 'nokey');
    const provisionOutcome = new Map<string, string>();
    await Promise.all(
      ordinary.map(async (a) => {
        const r = await finished(a.operationId);
        provisionOutcome.set(a.id, r.status);
      }),
    );
    note(`ordinary provisions finished: ${[...provisionOutcome.values()].filter((s) => s === 'succeeded').length} succeeded`);
    // Each rolling restart waits for the one before to be up again; the last may still be on its way.
    await phaseFaults('phase 1', phase1Faults);

    // ================= A job added by hand (as in Bull Board) that does not match its operation =================
    const victim = ordinary.find((a) => provisionOutcome.get(a.id) === 'succeeded')!;
    const other = ordinary.find((a) => a !== victim && provisionOutcome.get(a.id) === 'succeeded')!;
    const eventsBefore = (await ds.query(`SELECT count(*)::int AS n FROM events WHERE operation_id = $1`, [victim.operationId]))[0].n;
    const handMade = [
      await queues.stop.add('stop', { operationId: victim.operationId, agentId: victim.id }),
      await queues.destroy.add('destroy', { operationId: victim.operationId, agentId: other.id }),
    ];
    for (const job of handMade) {
      const queue = queues[job.queueName as 'stop' | 'destroy'];
      await until(`hand-made job ${job.id} to fail`, async () => (await queue.getJobState(job.id!)) === 'failed', { timeoutMs: 60_000, intervalMs: 100 });
      expect((await queue.getJob(job.id!))!.failedReason).to.match(/does not match/);
    }
    expect((await ds.query(`SELECT count(*)::int AS n FROM events WHERE operation_id = $1`, [victim.operationId]))[0].n).to.equal(eventsBefore);
    note(`${handMade.length} hand-made mismatched jobs refused, nothing changed`);

    // ================= Phase 2: stop / start / destroy mixes =================
    const active = ordinary.filter((a) => provisionOutcome.get(a.id) === 'succeeded');
    // One agent sits the scripts out: at the Redis wipe its stop is the operation certainly queued.
    const witness = active[active.length - 1]!;
    const scripts: { agent: (typeof agents)[number]; kind: ScriptKind }[] = active.slice(0, -1).map((agent) => ({
      agent,
      kind: rng.weighted<ScriptKind>([
        [25, 'stop-start'],
        [12, 'stop-destroy'],
        [15, 'destroy'],
        [10, 'stop-race-destroy'],
        [10, 'stop-start-stop'],
        [8, 'stop-twice-same-key'],
        [8, 'hibernate-wake'],
        [5, 'stop-hibernate'],
        [5, 'hibernate-destroy'],
        [12, 'idle'],
      ]),
    }));
    const phase2Ops = ['stop', 'start', 'destroy', 'hibernate', 'wake'] as const;
    const activeJobs = async () => (await Promise.all(phase2Ops.map((q) => queues[q].getActiveCount()))).reduce((a, b) => a + b, 0);
    const phase2Total = scripts.reduce(
      (n, s) =>
        n +
        ({
          'stop-start': 2,
          'stop-destroy': 2,
          destroy: 1,
          'stop-race-destroy': 2,
          'stop-start-stop': 3,
          'stop-twice-same-key': 1,
          'hibernate-wake': 2,
          'stop-hibernate': 2,
          'hibernate-destroy': 2,
          idle: 0,
        })[s.kind],
      0,
    );
    const phase2Done = async (share: number) => (await countOps(phase2Ops, ['succeeded', 'failed'])) >= phase2Total * share;
    const phase2Faults = ['redis restart', '429 burst in phase 2', 'redis wipe', 'kill #2'];
    // The scripts' share still to come (40% or more) is the work that the held cloud keeps in flight.
    // The wipe (short) comes before the kill (whose restart takes a while) so that it is not kept
    // waiting for the restart while that work runs out.
    triggers.push(
      fault({ name: 'redis restart', after: () => phase2Done(0.2), run: () => restartRedis('mid stop/start/destroy') }),
      fault({ name: '429 burst in phase 2', after: () => phase2Done(0.35), run: async () => burst429('phase 2') }),
      fault({
        name: 'redis wipe',
        after: async () => faultState('redis restart') === 'done' && (await phase2Done(0.45)),
        during: async () => (await countOps(phase2Ops, ['running'])) > 0,
        notDuring: ['kill #2'],
        run: () => wipeInFlight('mid stop/start/destroy, operations queued and running'),
      }),
      fault({
        name: 'kill #2',
        after: () => phase2Done(0.6),
        during: async () => (await activeJobs()) > 0,
        notDuring: ['redis wipe'],
        run: () => killWorker(workers[1]!, 'mid stop/start/destroy'),
      }),
    );

    let queuedAtWipe: string | undefined;
    /**
     * FLUSHALL with operations certainly running and queued: the workers are frozen (SIGSTOP), so
     * nothing moves while an operation is seen running with its job active and the witness's stop is
     * accepted (queued, its job waiting in Redis); then Redis loses everything, and the workers go on.
     */
    async function wipeInFlight(why: string) {
      holdCloud('redis wipe', true);
      try {
        await until(
          'an operation running with its job active while the workers are frozen',
          async () => {
            for (const w of workers) w.pause();
            if ((await countOps(phase2Ops, ['running'])) > 0 && (await activeJobs()) > 0) return true;
            for (const w of workers) w.resume();
            return false;
          },
          { timeoutMs: ARMED_DEADLINE_MS, intervalMs: 50 },
        );
        queuedAtWipe = await command(witness.id, 'stop');
        if (!queuedAtWipe) throw new Error(`the witness ${witness.id} refused a stop`);
        const [{ queue_job_id: jobId }] = await ds.query(`SELECT queue_job_id FROM operations WHERE id = $1`, [queuedAtWipe]);
        await until('the witness\'s stop to wait in Redis', async () => ['waiting', 'prioritized'].includes(await queues.stop.getJobState(jobId)));
        const [{ status }] = await ds.query(`SELECT status::text FROM operations WHERE id = $1`, [queuedAtWipe]);
        expect(status, 'the witness\'s stop while the workers are frozen').to.equal('queued');
        await wipeRedis(why);
      } finally {
        for (const w of workers) w.resume();
        holdCloud('redis wipe', false);
      }
    }

    const command = async (agentId: string, action: 'stop' | 'start' | 'destroy' | 'hibernate' | 'wake', key?: string) =>
      accept(await call('POST', `/v1/agents/${agentId}/${action}`, undefined, key ? { 'idempotency-key': key } : {}), `${action} ${agentId}`);
    const step = async (agentId: string, action: 'stop' | 'start' | 'destroy' | 'hibernate' | 'wake') => {
      const id = await command(agentId, action);
      return id ? (await finished(id)).status === 'succeeded' : false;
    };

    async function runScript({ agent, kind }: (typeof scripts)[number]) {
      switch (kind) {
        case 'stop-start':
          if (await step(agent.id, 'stop')) await step(agent.id, 'start');
          return;
        case 'stop-destroy':
          await step(agent.id, 'stop');
          await step(agent.id, 'destroy');
          return;
        case 'destroy':
          await step(agent.id, 'destroy');
          return;
        case 'stop-race-destroy': {
          // Destroy lands while the stop is queued or running: both finish, the agent ends destroyed.
          const stopId = await command(agent.id, 'stop');
          const destroyId = await command(agent.id, 'destroy');
          await Promise.all([stopId && finished(stopId), destroyId && finished(destroyId)]);
          return;
        }
        case 'stop-start-stop':
          if ((await step(agent.id, 'stop')) && (await step(agent.id, 'start'))) await step(agent.id, 'stop');
          return;
        case 'stop-twice-same-key': {
          const key = `stop-${agent.id}`;
          const first = await call('POST', `/v1/agents/${agent.id}/stop`, undefined, { 'idempotency-key': key });
          const second = await call('POST', `/v1/agents/${agent.id}/stop`, undefined, { 'idempotency-key': key });
          const id = accept(first, `stop ${agent.id}`);
          expect(second.status, `replayed stop ${agent.id}`).to.be.oneOf([200, 202]);
          expect(second.body.operation.id).to.equal(id);
          stats.replays++;
          if (id) await finished(id);
          return;
        }
        case 'hibernate-wake':
          // Hibernate: snapshot, server deleted, device kept; wake: a server from the snapshot, same device.
          if (await step(agent.id, 'hibernate')) await step(agent.id, 'wake');
          return;
        case 'stop-hibernate':
          if (await step(agent.id, 'stop')) await step(agent.id, 'hibernate');
          return;
        case 'hibernate-destroy':
          await step(agent.id, 'hibernate');
          await step(agent.id, 'destroy');
          return;
        case 'idle':
          return;
      }
    }

    let nextScript = 0;
    await Promise.all(
      Array.from({ length: SCRIPT_CONCURRENCY }, async () => {
        while (nextScript < scripts.length) await runScript(scripts[nextScript++]!);
      }),
    );
    note(`phase 2 scripts finished (${phase2Total} commands planned)`);
    await phaseFaults('phase 2', phase2Faults);

    // ================= Settle: rollbacks, then asking for them again =================
    await until(
      'every provisioning job to succeed or be rolled back',
      async () => (await countJobs(['queued', 'running', 'failed'])) === 0,
      { timeoutMs: 120_000, intervalMs: 200 },
    );
    note('every provisioning job succeeded or rolled back');
    const failedJobs: { id: string }[] = await ds.query(`SELECT id FROM provisioning_jobs WHERE status = 'rolled_back'`);
    for (const { id } of failedJobs) {
      // The listener already asked; asking through the API returns that same rollback.
      const res = await call('POST', `/v1/provisioning-jobs/${id}/rollback`);
      expect(res.status, `rollback ${id} via API: ${JSON.stringify(res.body)}`).to.equal(200);
      const [auto] = await ds.query(`SELECT id FROM operations WHERE idempotency_key = $1`, [`rollback:${id}`]);
      expect(res.body.operation.id).to.equal(auto.id);
      stats.replays++;
    }
    await until('every operation to finish', async () => (await countOps(['provision', 'stop', 'start', 'destroy', 'rollback', 'hibernate', 'wake'], ['queued', 'running'])) === 0, {
      timeoutMs: 120_000,
      intervalMs: 200,
    });

    note('every operation finished');
    observerStopped = true;
    pollerStopped = true;
    await Promise.all([observer, poller, ...triggerRuns]);
    expect(failures.map((e) => e.message), `errors in the fault triggers: ${failures.map((e) => e.stack ?? e.message).join(' | ')}`).to.deep.equal([]);
    faults.clear();

    // ================= Invariants =================
    const state = control.state();
    const report = await checkInvariants(ds, state, stats.accepted);
    const merge = (more: InvariantReport) => {
      for (const [k, n] of Object.entries(more.checked)) report.checked[k] = (report.checked[k] ?? 0) + n;
      report.violations.push(...more.violations);
    };
    merge(await checkFinalOutcomes(ds));
    merge(await checkWebhookOutcomes(ds, receivedWebhooks));
    // No accepted operation failed because of our own restarts or Redis losing its jobs.
    const ownOutage: { id: string; error: string }[] = await ds.query(
      `SELECT id, error FROM operations WHERE status = 'failed' AND error ~* '(Interrupted by worker shutdown|worker shut down|job stalled more than|gone from the queue|not retained|connection terminated|ECONNREFUSED|database)'`,
    );
    report.checked['no failure from our own outages'] = Number((await ds.query(`SELECT count(*)::int AS n FROM operations`))[0].n);
    for (const o of ownOutage) report.violations.push(`operation ${o.id} failed because of our own outage: ${o.error}`);
    for (const id of acceptedDuringOutage) {
      report.checked['accepted while Redis was down, then carried out'] = (report.checked['accepted while Redis was down, then carried out'] ?? 0) + 1;
      const [op] = await ds.query(`SELECT status FROM operations WHERE id = $1`, [id]);
      if (op?.status !== 'succeeded') report.violations.push(`operation ${id} accepted while Redis was down is ${op?.status}`);
    }
    report.checked['queued at the Redis wipe, then carried out'] = 1;
    const [atWipe] = await ds.query(`SELECT status FROM operations WHERE id = $1`, [queuedAtWipe]);
    if (atWipe?.status !== 'succeeded') report.violations.push(`operation ${queuedAtWipe} queued at the Redis wipe is ${atWipe?.status}`);
    for (const name of OPERATION_QUEUES) {
      const counts = await queues[name].getJobCounts('active', 'waiting', 'delayed', 'prioritized', 'waiting-children');
      report.checked['queue drained'] = (report.checked['queue drained'] ?? 0) + 1;
      const left = Object.values(counts).reduce((a, b) => a + b, 0);
      if (left > 0) report.violations.push(`queue ${name} still holds jobs: ${JSON.stringify(counts)}`);
    }

    // ================= Summary =================
    const byTypeOutcome: { type: string; status: string; n: number }[] = await ds.query(
      `SELECT type::text, status::text, count(*)::int AS n FROM operations GROUP BY 1, 2 ORDER BY 1, 2`,
    );
    const failedReasons: { type: string; reason: string; n: number }[] = await ds.query(
      `SELECT type::text, regexp_replace(error, '[0-9a-f]{8}-[0-9a-f-]{27}|\\d+', '#', 'g') AS reason, count(*)::int AS n
         FROM operations WHERE status = 'failed' GROUP BY 1, 2 ORDER BY 3 DESC`,
    );
    const rollbackSummary: { error: string | null; n: number }[] = await ds.query(
      `SELECT i.error, count(*)::int AS n FROM instances i WHERE i.status = 'failed' GROUP BY 1 ORDER BY 1`,
    );
    const requests = control.requestCounts();
    const totalRequests = Object.values(requests).reduce((a, b) => a + b, 0);
    const unusedKeys = state.authKeys.filter((k) => !k.used && !k.invalid).length;
    const instanceStates: { status: string; n: number }[] = await ds.query(`SELECT status::text, count(*)::int AS n FROM instances GROUP BY 1 ORDER BY 1`);
    const webhookStates: { status: string; n: number }[] = await ds.query(`SELECT status::text, count(*)::int AS n FROM webhook_deliveries GROUP BY 1 ORDER BY 1`);
    const lines = [
      `chaos summary (seed ${seed}, ${AGENTS} agents, ${((Date.now() - started) / 1000).toFixed(1)} s)`,
      `operations by type/outcome: ${byTypeOutcome.map((r) => `${r.type}/${r.status}=${r.n}`).join(' ')}`,
      `instances: ${instanceStates.map((r) => `${r.status}=${r.n}`).join(' ')}`,
      `failed operations: ${failedReasons.map((r) => `${r.type} ${r.n}× "${r.reason.slice(0, 140)}"`).join('; ') || 'none'}`,
      `rolled back: ${rollbackSummary.map((r) => `${r.n}× "${r.error}"`).join('; ') || 'none'}`,
      `API answers: ${Object.entries(stats.http).map(([s, n]) => `${s}×${n}`).join(' ')} (503s retried: ${stats.retried503}, 409 refusals: ${stats.refused409}, idempotent replays checked: ${stats.replays})`,
      `worker SIGKILLs: ${stats.kills.length} — ${stats.kills.join('; ')}`,
      `redis restarts: ${redis!.restarts} (down ${stats.redisDowntimeMs.join(', ')} ms, AOF replay lost 0 jobs; ${acceptedDuringOutage.length} creates accepted while down)`,
      `redis wipes (FLUSHALL): ${stats.redisWipes.length} (${stats.redisWipes.join(', ')} jobs lost from Redis, all re-delivered from PostgreSQL)`,
      `rolling restarts (SIGTERM): ${stats.rollingRestarts.length} — ${stats.rollingRestarts.join('; ')}`,
      `postgres drops: ${stats.pgTerminated.length} (${stats.pgTerminated.join(', ')} connections terminated)`,
      `webhook deliveries of operation outcomes: ${webhookStates.map((r) => `${r.status}=${r.n}`).join(' ') || 'none'}; received ${receivedWebhooks.length} requests`,
      `faults injected (simulator counters): ${Object.entries(faults.firedBy(3)).map(([k, n]) => `${k.replace('chaos:', '')}=${n}`).join(' ')}`,
      `  of ${totalRequests} cloud requests; 429 bursts: ${bursts}; ACPI-ignoring servers: ${stats.acpiIgnoring.size}, forced power-offs: ${requests['POST /hetzner/v1/servers/{id}/actions/poweroff'] ?? 0}; auth keys revoked behind tailfleet's back: ${stats.revokedKeys.size}; unused live auth keys left: ${unusedKeys}`,
      `worker output that is not structured JSON: ${workers.reduce((n, w) => n + w.unstructured.length, 0)} lines${workers.flatMap((w) => w.unstructured).slice(0, 3).map((l) => `\n        ${l.slice(0, 160)}`).join('')}`,
      `invariants checked: ${Object.entries(report.checked).map(([k, n]) => `${k}=${n}`).join(', ')}`,
      `violations: ${report.violations.length}`,
      `timeline: ${stats.events.join(' | ')}`,
    ];
    console.log(`      ${lines.join('\n      ')}`);

    expect(report.violations, report.violations.slice(0, 20).join('\n')).to.deep.equal([]);
    // Through the Redis restart every worker line stays structured (BullMQ used to dump raw errors).
    expect(workers.flatMap((w) => w.unstructured).slice(0, 5)).to.deep.equal([]);
    expect(stats.kills).to.have.length(2);
    expect(stats.rollingRestarts).to.have.length(3);
    expect(stats.redisWipes).to.have.length(1);
    expect(redis!.restarts).to.equal(1);
    expect(stats.pgTerminated).to.have.length(1);
    expect(stats.pgTerminated[0]).to.be.greaterThan(0);
    const fired = faults.firedBy(2);
    expect(fired['chaos:5xx']).to.be.greaterThan(0);
    expect(fired['chaos:429']).to.be.greaterThan(0);
    expect(stats.acpiIgnoring.size).to.be.greaterThan(0);
    // The capacity faults met: the first project refused at its limit, fsn1 refused once sold out, and
    // servers live in both projects, none over the first one's limit.
    const refusals: { code: string; n: number }[] = await ds.query(
      `SELECT r->>'code' AS code, count(*)::int AS n FROM instances CROSS JOIN LATERAL jsonb_array_elements(placement_refusals) r GROUP BY 1`,
    );
    const refusedBy = Object.fromEntries(refusals.map((r) => [r.code, r.n]));
    expect(refusedBy.resource_limit_exceeded ?? 0, JSON.stringify(refusedBy)).to.be.greaterThan(0);
    const live = control.state().servers;
    expect(live.filter((x) => x._sim.project === 'alpha').length).to.be.at.most(PROJECTS[0].maxServers!);
    expect(live.some((x) => x._sim.project === 'beta')).to.equal(true);
    expect(live.some((x) => x.location.name === 'nbg1')).to.equal(true);
    passed = true;
  });
});
