/**
 * Cost of stopping many servers at once: tailfleet's Hetzner client (shared server reads and polls)
 * against a naive poller (one GET per action and one GET per server every interval), both against
 * the in-process simulator with Hetzner's real rate limit (3600/h, refilled 1/s).
 *
 *   npm run bench:clients [-- --servers 100 --poll-ms 100]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HetznerClient, type CloudRequestEvent, type HetznerAction, type HetznerServer } from '../src/clients';
import { startSimulator, type RunningSimulator } from '../src/simulator';
import { sleep } from '../src/lib/time';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : NaN;
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

const SERVERS = arg('servers', 100);
const POLL_MS = arg('poll-ms', 100);
/** An ACPI shutdown that takes ten poll intervals, as a real OS needs a while. */
const SHUTDOWN_MS = 10 * POLL_MS;
const RATE_LIMIT = { limit: 3600, refillPerSecond: 1 };
/** The shutdown call and a share of the shared reads and status polls. */
const TARGET_PER_STOP = 1.3;

interface PhaseResult {
  client: 'tailfleet' | 'naive';
  stops: number;
  requests: number;
  requestsPerStop: number;
  rateLimited: number;
  wallMs: number;
  byRoute: Record<string, number>;
}

function hetznerCounts(sim: RunningSimulator): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, n] of Object.entries(sim.control.requestCounts())) {
    if (key.includes(' /hetzner/')) out[key.replace('/hetzner/v1', '')] = n;
  }
  return out;
}

function phase(client: PhaseResult['client'], sim: RunningSimulator, stops: number, rateLimited: number, wallMs: number): PhaseResult {
  const byRoute = hetznerCounts(sim);
  const requests = Object.values(byRoute).reduce((a, b) => a + b, 0);
  return { client, stops, requests, requestsPerStop: requests / stops, rateLimited, wallMs, byRoute };
}

/** What a straightforward client does: every stop polls its own action, then its own server. */
class NaiveStopper {
  rateLimited = 0;

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
  ) {}

  private async call<T>(method: string, path: string): Promise<T> {
    for (;;) {
      const res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}` },
      });
      if (res.status === 429) {
        this.rateLimited++;
        const reset = Number(res.headers.get('ratelimit-reset')) * 1000;
        await sleep(Math.min(60_000, Math.max(1000, reset - Date.now())));
        continue;
      }
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    }
  }

  async stop(id: number): Promise<void> {
    const { action } = await this.call<{ action: HetznerAction }>('POST', `/servers/${id}/actions/shutdown`);
    for (let status = action.status; status === 'running'; ) {
      await sleep(POLL_MS);
      status = (await this.call<{ action: HetznerAction }>('GET', `/actions/${action.id}`)).action.status;
    }
    for (;;) {
      await sleep(POLL_MS);
      const { server } = await this.call<{ server: HetznerServer }>('GET', `/servers/${id}`);
      if (server.status === 'off') return;
    }
  }
}

function table(results: PhaseResult[]): string {
  const rows: string[][] = [
    ['', ...results.map((r) => r.client)],
    ['stops', ...results.map((r) => String(r.stops))],
    ['Hetzner requests', ...results.map((r) => String(r.requests))],
    ['requests per stop', ...results.map((r) => r.requestsPerStop.toFixed(2))],
    ['429 responses', ...results.map((r) => String(r.rateLimited))],
    ['wall time', ...results.map((r) => `${(r.wallMs / 1000).toFixed(2)} s`)],
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('   ');
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('   '), ...rows.slice(1).map(line)].join('\n');
}

async function main(): Promise<void> {
  const sim = await startSimulator({
    port: 0,
    // Rate limits are per token: one for the set-up and one for each measured client.
    credentials: { hetznerTokens: ['bench-setup', 'bench-tailfleet', 'bench-naive'] },
    timings: {
      actionDurationMs: { create_server: 5 * POLL_MS, start_server: 3 * POLL_MS, shutdown_server: POLL_MS, stop_server: POLL_MS },
      shutdownMs: SHUTDOWN_MS,
      bootMs: 0,
      enrollDelayMs: 0,
      rateLimit: RATE_LIMIT,
    },
  });
  try {
    // Rate limits are per token: each phase gets its own, so both start from a full budget.
    const setup = new HetznerClient({
      baseUrl: sim.hetznerUrl,
      token: 'bench-setup',
      actionPollIntervalMs: POLL_MS,
      serverPollIntervalMs: POLL_MS,
    });
    console.log(`Creating ${SERVERS} servers (poll interval ${POLL_MS} ms, shutdown takes ${SHUTDOWN_MS} ms)…`);
    const created = await Promise.all(
      Array.from({ length: SERVERS }, (_, i) =>
        setup.createServer({
          name: `bench-${i}`,
          serverType: 'cx22',
          image: 'ubuntu-24.04',
          location: 'fsn1',
          labels: { 'managed-by': 'tailfleet', bench: 'clients' },
        }),
      ),
    );
    await setup.waitForActions(created.flatMap((c) => [c.action.id, ...c.nextActions.map((a) => a.id)]));
    const ids = created.map((c) => c.server.id);

    const events: CloudRequestEvent[] = [];
    const tailfleet = new HetznerClient({
      baseUrl: sim.hetznerUrl,
      token: 'bench-tailfleet',
      actionPollIntervalMs: POLL_MS,
      serverPollIntervalMs: POLL_MS,
      observer: { onRequest: (e) => events.push(e) },
    });
    sim.control.resetRequestCounts();
    let started = Date.now();
    const outcomes = await Promise.all(ids.map((id) => tailfleet.shutdownServer(id, { timeoutMs: 60_000 })));
    const ours = phase('tailfleet', sim, ids.length, events.filter((e) => e.status === 429).length, Date.now() - started);
    const graceful = outcomes.filter((o) => o === 'graceful').length;
    if (graceful !== ids.length) throw new Error(`expected ${ids.length} graceful stops, got ${graceful}`);

    console.log('Powering the servers on again…');
    await Promise.all(ids.map((id) => setup.powerOnServer(id)));

    const naive = new NaiveStopper(sim.hetznerUrl, 'bench-naive');
    sim.control.resetRequestCounts();
    started = Date.now();
    await Promise.all(ids.map((id) => naive.stop(id)));
    const theirs = phase('naive', sim, ids.length, naive.rateLimited, Date.now() - started);

    const results = [ours, theirs];
    console.log(`\n${SERVERS} concurrent stops, rate limit ${RATE_LIMIT.limit}/h refilled ${RATE_LIMIT.refillPerSecond}/s\n`);
    console.log(table(results));
    console.log(`\nRequests by route:`);
    for (const r of results) console.log(`  ${r.client}: ${JSON.stringify(r.byRoute)}`);

    const dir = join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'clients.json');
    writeFileSync(
      file,
      `${JSON.stringify(
        {
          at: new Date().toISOString(),
          servers: SERVERS,
          pollIntervalMs: POLL_MS,
          shutdownMs: SHUTDOWN_MS,
          rateLimit: RATE_LIMIT,
          results,
        },
        null,
        2,
      )}\n`,
    );
    console.log(`\nWrote ${file}`);
    if (ours.requestsPerStop > TARGET_PER_STOP || ours.rateLimited > 0) {
      console.error(`tailfleet exceeded its target (≤ ${TARGET_PER_STOP} requests per stop, no 429)`);
      process.exitCode = 1;
    }
  } finally {
    await sim.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
