/**
 * `npm run bench`: every benchmark in one run, one summary table, one JSON file under bench/results/.
 *
 *   npm run bench [-- --only throughput,relay,burst,requests,latency,clients,reconcile,streams,capacity,pools,policy]
 *
 * The in-process benches (throughput, relay, burst, requests, latency, reconcile, streams, capacity, pools) each use their own database,
 * Redis prefix and simulator, and clean up. The client and policy benches export no function (they run on
 * import), so they run as child processes and its printed table and JSON result are carried over.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { runBurstBench } from './burst.bench';
import { runCapacityBench } from './capacity.bench';
import { runPoolsBench } from './pools.bench';
import { runLatencyBench } from './latency.bench';
import { fmt, log, missedTargets, RESULTS_DIR, table, writeResult, type Row } from './lib/report';
import { runReconcileBench } from './reconcile.bench';
import { runRelayBench } from './relay.bench';
import { runRequestsBench } from './requests.bench';
import { runStreamsBench } from './streams.bench';
import { runThroughputBench } from './throughput.bench';

interface ChildBench {
  name: string;
  script: string;
  args: string[];
  /** Summary lines from the JSON result the script wrote (if it did). */
  rows(result: any): Row[];
}

const CHILD_TIMEOUT_MS = 5 * 60_000;

const CHILDREN: ChildBench[] = [
  {
    name: 'clients',
    script: 'clients.bench.ts',
    args: [],
    rows(r) {
      const results: Array<{ client: string; requestsPerStop: number; rateLimited: number }> = r?.results ?? [];
      return results.map((x) => ({
        bench: 'clients',
        metric: `Hetzner requests per stop, ${x.client} client (${r.servers} servers, poll ${r.pollIntervalMs} ms)`,
        value: fmt.ratio(x.requestsPerStop),
        ...(x.client === 'tailfleet' ? { target: '≤ 1.3', met: x.requestsPerStop <= 1.3 && x.rateLimited === 0 } : {}),
      }));
    },
  },
  {
    name: 'policy',
    script: 'policy.bench.ts',
    args: [],
    // The bench writes its own summary lines (with their targets) into its result.
    rows: (r) => (Array.isArray(r?.rows) ? (r.rows as Row[]) : []),
  },
];

interface ChildOutcome {
  name: string;
  ran: boolean;
  exitCode: number | null;
  ms: number;
  stdout: string;
  stderrTail: string;
  result?: unknown;
}

function runChild(c: ChildBench): Promise<ChildOutcome> {
  const file = join(__dirname, c.script);
  if (!existsSync(file)) return Promise.resolve({ name: c.name, ran: false, exitCode: null, ms: 0, stdout: '', stderrTail: `${c.script} not found` });
  const resultFile = join(RESULTS_DIR, `${c.name}.json`);
  const before = existsSync(resultFile) ? readFileSync(resultFile, 'utf8') : undefined;
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [require.resolve('tsx/cli'), file, ...c.args], {
      cwd: join(__dirname, '..'),
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), CHILD_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      const after = existsSync(resultFile) ? readFileSync(resultFile, 'utf8') : undefined;
      let result: unknown;
      // Only a file this run wrote counts; an old one would report stale numbers.
      if (after !== undefined && after !== before) {
        try {
          result = JSON.parse(after);
        } catch {
          result = undefined;
        }
      }
      resolve({ name: c.name, ran: true, exitCode: code, ms: Date.now() - started, stdout, stderrTail: stderr.split('\n').slice(-20).join('\n'), result });
    });
  });
}

function gitDescribe(): { commit: string; dirty: boolean } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: __dirname }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: __dirname }).toString().trim() !== '';
    return { commit, dirty };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

async function main(): Promise<void> {
  const onlyArg = process.argv.indexOf('--only');
  const only = onlyArg >= 0 ? new Set(process.argv[onlyArg + 1].split(',')) : undefined;
  const wanted = (name: string) => !only || only.has(name);
  const started = Date.now();
  const env = {
    node: process.version,
    cpus: cpus().length,
    loadavgBefore: loadavg().map((l) => Number(l.toFixed(2))),
    ...gitDescribe(),
  };
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  const failures: string[] = [];

  const inProcess: Array<[string, () => Promise<{ rows: Row[] }>]> = [
    ['throughput', () => runThroughputBench()],
    ['relay', () => runRelayBench()],
    ['burst', () => runBurstBench()],
    ['requests', () => runRequestsBench()],
    ['latency', () => runLatencyBench()],
    ['reconcile', () => runReconcileBench()],
    ['streams', () => runStreamsBench()],
    ['capacity', () => runCapacityBench()],
    ['pools', () => runPoolsBench()],
  ];
  for (const [name, run] of inProcess) {
    if (!wanted(name)) continue;
    const t = Date.now();
    try {
      const { rows: r, ...data } = await run();
      rows.push(...r);
      results[name] = { ms: Date.now() - t, ...data };
    } catch (err) {
      failures.push(`${name}: ${(err as Error).stack ?? String(err)}`);
      rows.push({ bench: name, metric: 'did not complete', value: '-', met: false });
    }
  }

  const printed: string[] = [];
  for (const c of CHILDREN) {
    if (!wanted(c.name)) continue;
    log(`${c.name}: running bench/${c.script} as a child process`);
    const o = await runChild(c);
    if (!o.ran) {
      rows.push({ bench: c.name, metric: `not run: ${o.stderrTail}`, value: '-' });
      continue;
    }
    printed.push(`── bench/${c.script} (exit ${o.exitCode}, ${fmt.s(o.ms)}) ──\n${o.stdout.trim()}`);
    const childRows = o.result ? c.rows(o.result) : [];
    rows.push(...childRows);
    if (o.exitCode !== 0 && childRows.length === 0) {
      failures.push(`${c.name}: exit ${o.exitCode}\n${o.stderrTail}`);
      rows.push({ bench: c.name, metric: `exited ${o.exitCode}`, value: '-', met: false });
    }
    results[c.name] = { exitCode: o.exitCode, ms: o.ms, stdout: o.stdout, result: o.result };
  }

  const summary = table(rows);
  const envLine = `node ${env.node}, ${env.cpus} CPUs, load average ${env.loadavgBefore.join(' ')} at start, commit ${env.commit}${env.dirty ? ' + uncommitted src changes' : ''}`;
  console.log(`\ntailfleet benchmarks — ${envLine}\n`);
  console.log(summary);
  if (printed.length > 0) console.log(`\n${printed.join('\n\n')}`);
  const file = writeResult(`run-${new Date(started).toISOString().replace(/[:.]/g, '-')}`, {
    at: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    env: { ...env, loadavgAfter: loadavg().map((l) => Number(l.toFixed(2))) },
    table: summary,
    rows,
    results,
    failures,
  });
  writeResult('latest', JSON.parse(readFileSync(file, 'utf8')));
  console.log(`\nWrote ${file} (and latest.json) in ${fmt.s(Date.now() - started)}`);
  if (failures.length > 0) {
    console.error(`\n${failures.length} bench(es) failed:\n${failures.join('\n\n')}`);
    process.exitCode = 1;
  }
  // Every target is a requirement: missing one fails the run like a bench that did not complete, so a
  // regression cannot land quietly.
  const missed = missedTargets(rows);
  if (missed.length > 0) {
    console.error(`\nTarget(s) missed:\n${missed.map((r) => `  ${r.bench}: ${r.metric}: ${r.value} (target ${r.target})`).join('\n')}`);
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
