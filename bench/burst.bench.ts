/**
 * A burst of 1,000 concurrent stops, then 1,000 concurrent starts, through the HTTP API at the default
 * WORKER_CONCURRENCY. All requests of a phase are sent at once, over 100 keep-alive connections (as
 * behind a proxy: a thousand simultaneous connects would overflow the server's accept queue). The agents are seeded straight into PostgreSQL and the simulator (running
 * servers), and simulated actions take no time, so what is measured is tailfleet's own work: every
 * request accepted, every operation carried to its end. Time to final is from the moment the request
 * was sent to the operation's `finished_at`; every operation must succeed.
 *
 *   npx tsx bench/burst.bench.ts [-- --agents 1000]
 */
import { percentile, fmt, log, table, writeResult, type Row } from './lib/report';
import { seedRunningAgents } from './lib/seed';
import { pooledApi, startBenchStack, until, ZERO_TIMINGS } from './lib/stack';
import { numberArg } from './throughput.bench';

export interface BurstPhase {
  verb: 'stop' | 'start';
  operations: number;
  /** First request sent → last operation finished. */
  wallMs: number;
  opsPerSec: number;
  /** Sorted request-sent → finished times, ms. */
  p50ToFinalMs: number;
  p95ToFinalMs: number;
  maxToFinalMs: number;
  succeeded: number;
  /** Answers other than 202, by status. */
  refused: Record<string, number>;
}

export interface BurstResult {
  agents: number;
  concurrency: number;
  connections: number;
  stop: BurstPhase;
  start: BurstPhase;
  rows: Row[];
}

const PHASE_TIMEOUT_MS = 240_000;
const CONNECTIONS = 100;

export async function runBurstBench(opts: { agents?: number } = {}): Promise<BurstResult> {
  const agents = opts.agents ?? 1000;
  // No WORKER_CONCURRENCY: the default is what is measured.
  const stack = await startBenchStack('burst', { timings: ZERO_TIMINGS });
  try {
    const { tf } = stack;
    const call = pooledApi(tf.url!, stack.apiToken, CONNECTIONS);
    log(`burst: seeding ${agents} running agents`);
    const ids = await seedRunningAgents(stack, agents, 'burst');

    const phase = async (verb: 'stop' | 'start'): Promise<BurstPhase> => {
      log(`burst: ${agents} concurrent ${verb}s`);
      const sentAt = new Map<string, number>();
      const refused: Record<string, number> = {};
      const started = Date.now();
      const operationIds = (
        await Promise.all(
          ids.map(async (id) => {
            const at = Date.now();
            const res = await call('POST', `/v1/agents/${id}/${verb}`);
            if (res.status !== 202) {
              refused[res.status] = (refused[res.status] ?? 0) + 1;
              return undefined;
            }
            const operationId = res.body.operation.id as string;
            sentAt.set(operationId, at);
            return operationId;
          }),
        )
      ).filter((id): id is string => id !== undefined);
      if (operationIds.length !== agents) throw new Error(`${verb}: ${agents - operationIds.length} requests refused: ${JSON.stringify(refused)}`);

      const finished = async () => {
        const [{ n }] = await tf.dataSource.query(
          `SELECT count(*)::int AS n FROM operations WHERE id = ANY($1::uuid[]) AND status IN ('succeeded', 'failed', 'cancelled')`,
          [operationIds],
        );
        return n === operationIds.length;
      };
      await until(`${agents} ${verb}s to finish`, finished, PHASE_TIMEOUT_MS, 100);

      const rows: Array<{ id: string; status: string; finished_at: Date }> = await tf.dataSource.query(
        `SELECT id, status, finished_at FROM operations WHERE id = ANY($1::uuid[])`,
        [operationIds],
      );
      const bad = rows.filter((r) => r.status !== 'succeeded');
      if (bad.length > 0) throw new Error(`${verb}: ${bad.length} operations did not succeed: ${JSON.stringify(bad.slice(0, 5))}`);
      const toFinal = rows.map((r) => r.finished_at.getTime() - sentAt.get(r.id)!).sort((a, b) => a - b);
      const wallMs = Math.max(...rows.map((r) => r.finished_at.getTime())) - started;
      return {
        verb,
        operations: rows.length,
        wallMs,
        opsPerSec: (rows.length * 1000) / wallMs,
        p50ToFinalMs: percentile(toFinal, 50),
        p95ToFinalMs: percentile(toFinal, 95),
        maxToFinalMs: toFinal[toFinal.length - 1]!,
        succeeded: rows.length - bad.length,
        refused,
      };
    };
    const stop = await phase('stop');
    const start = await phase('start');
    call.close();

    const [{ n: running }] = await tf.dataSource.query(`SELECT count(*)::int AS n FROM instances WHERE status = 'running'`);
    if (running !== agents) throw new Error(`expected ${agents} running instances after the starts, found ${running}`);
    const off = stack.sim.control.state().servers.filter((s) => s.status !== 'running').length;
    if (off !== 0) throw new Error(`${off} simulated servers are not running after the starts`);

    const concurrency = tf.config.queues.concurrency;
    const bench = 'burst';
    const rows: Row[] = [];
    for (const p of [stop, start]) {
      rows.push({
        bench,
        metric: `${agents} concurrent ${p.verb}s via HTTP (${CONNECTIONS} connections, WORKER_CONCURRENCY ${concurrency}): wall / ops/s / p95 to final`,
        value: `${fmt.s(p.wallMs)} / ${fmt.rate(p.opsPerSec)} / ${fmt.s(p.p95ToFinalMs)}`,
      });
    }
    rows.push({
      bench,
      metric: `${agents} stops + ${agents} starts succeeded`,
      value: `${stop.succeeded + start.succeeded} / ${2 * agents}`,
      target: `${2 * agents} / ${2 * agents}`,
      met: stop.succeeded + start.succeeded === 2 * agents,
    });
    return { agents, concurrency, connections: CONNECTIONS, stop, start, rows };
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  runBurstBench({ agents: numberArg('agents', 1000) })
    .then((r) => {
      console.log(table(r.rows));
      const { rows: _rows, ...data } = r;
      console.log(`\nWrote ${writeResult('burst', { at: new Date().toISOString(), ...data })}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
