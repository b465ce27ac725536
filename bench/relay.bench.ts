/**
 * The outbox relay's own cost: SQL statements and Redis commands per pass, and per pending operation
 * the pass looked at. N running agents are seeded straight into PostgreSQL and the simulator, and a
 * tailfleet API with no worker (nothing takes the jobs) accepts a stop for each through HTTP; then a relay built as src/server.ts builds it for a worker process (with the reconcile
 * schedule check it runs each pass) makes three passes:
 *
 *   1. nothing pending — what every worker process pays every RELAY_INTERVAL_MS (it runs first);
 *   2. N queued operations whose jobs wait in Redis — the pass finds them all present;
 *   3. the same N after Redis lost every key under the prefix — the pass adds every job back.
 *
 * The relay ignores operations younger than its grace period (2 s); the bench sets it to 0 so that
 * it need not wait. Redis commands are counted one by one: the presence check sends N EXISTS in one
 * pipelined round trip.
 *
 *   npx tsx bench/relay.bench.ts [-- --operations 1000]
 */
import { OutboxRelay, type RelayResult } from '../src/operations/relay';
import { ensureReconcileSchedule } from '../src/processors/reconcile.processor';
import { silentLogger } from '../src/lib/logger';
import { installRoundTripCounters, roundTrips, roundTripsSince, type RoundTrips } from './lib/counters';
import { fmt, log, table, writeResult, type Row } from './lib/report';
import { seedRunningAgents } from './lib/seed';
import { api, deleteRedisPrefix, inBatches, startBenchStack } from './lib/stack';
import { numberArg } from './throughput.bench';

export interface RelayPass {
  label: string;
  result: RelayResult;
  ms: number;
  sql: number;
  redis: number;
  redisByCommand: Record<string, number>;
}

export interface RelayBenchResult {
  operations: number;
  relayIntervalMs: number;
  passes: { idle: RelayPass; present: RelayPass; lost: RelayPass };
  rows: Row[];
}

// The relay's production interval (RELAY_INTERVAL_MS default) and the reconcile schedule it checks.
const RECONCILE_INTERVAL_SECONDS = '300';

export async function runRelayBench(opts: { operations?: number } = {}): Promise<RelayBenchResult> {
  const n = opts.operations ?? 1000;
  installRoundTripCounters();
  const stack = await startBenchStack('relay', { env: { ROLE: 'api', RECONCILE_INTERVAL_SECONDS } });
  try {
    const { tf } = stack;
    const relay = new OutboxRelay({
      dataSource: tf.dataSource,
      operations: tf.repositories.operations,
      ledger: tf.ledger,
      outbox: tf.outbox,
      logger: silentLogger,
      graceMs: 0,
      batchSize: Math.max(1000, n),
      ensureSchedulers: async () => {
        await ensureReconcileSchedule(tf.queues.reconcile, tf.config.reconcile.intervalSeconds);
      },
    });
    const pass = async (label: string): Promise<RelayPass> => {
      const before: RoundTrips = roundTrips();
      const started = performance.now();
      const result = await relay.runOnce();
      const ms = performance.now() - started;
      const used = roundTripsSince(before);
      if (!result.ran) throw new Error(`relay pass "${label}" did not run (lock held elsewhere)`);
      return { label, result, ms, sql: used.sql, redis: used.redis, redisByCommand: used.redisByCommand };
    };

    // The first pass creates the reconcile schedule (an API process does not); the next is the steady state.
    await pass('warm-up');
    const idle = await pass('nothing pending');

    log(`relay: seeding ${n} running agents; accepting a stop for each with no worker running`);
    const ids = await seedRunningAgents(stack, n, 'relay');
    const call = api(tf.url!, stack.apiToken);
    await inBatches(ids, 50, async (id) => {
      const res = await call('POST', `/v1/agents/${id}/stop`);
      if (res.status !== 202) throw new Error(`POST /v1/agents/${id}/stop → ${res.status} ${JSON.stringify(res.body)}`);
    });
    const waiting = await tf.queues.stop.getWaitingCount();
    if (waiting !== n) throw new Error(`expected ${n} waiting stop jobs, found ${waiting}`);

    log(`relay: pass over ${n} queued operations with their jobs`);
    const present = await pass(`${n} queued, jobs present`);
    if (present.result.checked !== n || present.result.added !== 0) throw new Error(`unexpected pass: ${JSON.stringify(present.result)}`);

    log(`relay: Redis loses every key; pass over ${n} queued operations without their jobs`);
    await deleteRedisPrefix(stack.prefix);
    const lost = await pass(`${n} queued, jobs lost`);
    if (lost.result.checked !== n || lost.result.added !== n) throw new Error(`unexpected pass: ${JSON.stringify(lost.result)}`);
    const back = await tf.queues.stop.getWaitingCount();
    if (back !== n) throw new Error(`expected ${n} waiting stop jobs after the relay, found ${back}`);

    const bench = 'relay';
    const per = (x: number) => (x / n).toFixed(3).replace(/\.?0+$/, '');
    const rows: Row[] = [
      {
        bench,
        metric: `relay pass, nothing pending (every RELAY_INTERVAL_MS, ${tf.config.queues.relayIntervalMs / 1000} s, per worker process): SQL / Redis`,
        value: `${idle.sql} / ${idle.redis}`,
      },
      {
        bench,
        metric: `relay pass, ${n} queued stops waiting, no worker: SQL / Redis per pass (${fmt.ms(present.ms)})`,
        value: `${present.sql} / ${present.redis}`,
      },
      { bench, metric: `  same, per pending operation looked at: SQL / Redis`, value: `${per(present.sql)} / ${per(present.redis)}` },
      {
        bench,
        metric: `relay pass, ${n} queued stops whose jobs Redis lost: SQL / Redis per pass, ${lost.result.added} re-added (${fmt.ms(lost.ms)})`,
        value: `${lost.sql} / ${lost.redis}`,
      },
      { bench, metric: `  same, per pending operation looked at: SQL / Redis`, value: `${per(lost.sql)} / ${per(lost.redis)}` },
    ];
    return { operations: n, relayIntervalMs: tf.config.queues.relayIntervalMs, passes: { idle, present, lost }, rows };
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  runRelayBench({ operations: numberArg('operations', 1000) })
    .then((r) => {
      console.log(table(r.rows));
      for (const p of Object.values(r.passes)) console.log(`${p.label}: ${JSON.stringify(p.redisByCommand)}`);
      const { rows: _rows, ...data } = r;
      console.log(`\nWrote ${writeResult('relay', { at: new Date().toISOString(), ...data })}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
