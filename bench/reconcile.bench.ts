/**
 * Cost of one reconcile pass over a large fleet: cloud requests per pass (pages of 50 servers, one
 * device listing, one confirming read per server that vanished) and wall time, against the
 * in-process simulator, a scratch PostgreSQL database and real BullMQ queues.
 *
 *   npm run bench:reconcile [-- --servers 5000]
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { HetznerClient } from '../src/clients/hetzner/hetzner.client';
import { TailscaleClient } from '../src/clients/tailscale/tailscale.client';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';
import { createRepositories } from '../src/db/repositories';
import { Fleet } from '../src/fleet/fleet';
import { OwnershipGuard } from '../src/fleet/ownership-guard';
import { silentLogger } from '../src/lib/logger';
import { closeQueues, createQueues } from '../src/queues/queues';
import { ReconcileReports, Reconciler, stuckTimeouts, type ReconcileReport } from '../src/reconcile';
import { MANAGED_LABEL } from '../src/fleet/server-labels';
import { OperationLedger } from '../src/operations/ledger';
import { Outbox } from '../src/operations/outbox';
import { SIM_DEFAULT_CREDENTIALS, startSimulator, type RunningSimulator } from '../src/simulator';

/** Same shape as the rows of the overall `npm run bench` summary. */
export interface ReconcileBenchRow {
  bench: string;
  metric: string;
  value: string;
  target?: string;
  met?: boolean;
}

export interface ReconcileBenchOptions {
  servers: number;
  /** Drift planted behind tailfleet's back before the first pass. */
  poweredOff: number;
  deleted: number;
  orphanServers: number;
  orphanDevices: number;
  unlabelled: number;
}

export interface ReconcileBenchResult {
  /** Hetzner + Tailscale requests of the first pass (the one with drift to confirm): the upper figure. */
  requestsPerPass: number;
  options: ReconcileBenchOptions;
  passes: Array<{
    pass: number;
    hetznerRequests: number;
    tailscaleRequests: number;
    byRoute: Record<string, number>;
    wallMs: number;
    summary: ReconcileReport['summary'];
  }>;
  rows: ReconcileBenchRow[];
}

const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PAGE = 50;

function cloudCounts(sim: RunningSimulator) {
  const byRoute: Record<string, number> = {};
  let hetzner = 0;
  let tailscale = 0;
  for (const [key, n] of Object.entries(sim.control.requestCounts())) {
    // Token renewals are the client's business and at most one per TTL; the API calls are the pass's.
    if (key.includes('/oauth/')) continue;
    byRoute[key] = n;
    if (key.includes(' /hetzner/')) hetzner += n;
    else if (key.includes(' /tailscale/')) tailscale += n;
  }
  return { byRoute, hetzner, tailscale };
}

export async function runReconcileBench(opts: Partial<ReconcileBenchOptions> = {}): Promise<ReconcileBenchResult> {
  const o: ReconcileBenchOptions = {
    servers: 5000,
    poweredOff: 10,
    deleted: 5,
    orphanServers: 20,
    orphanDevices: 10,
    unlabelled: 25,
    ...opts,
  };
  // Hetzner's real limit (3600 requests per hour, refilled one per second): a pass must fit in it.
  const sim = await startSimulator({ timings: { rateLimit: { limit: 3600, refillPerSecond: 1 } }, seed: 11 });
  const database = scratchDatabaseName('bench_reconcile');
  const url = await createDatabase(ADMIN_URL, database);
  const dataSource = createDataSource({ url, poolSize: 4, applicationName: 'tailfleet-bench' });
  const connection = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
  const prefix = `tf-bench-reconcile-${randomBytes(4).toString('hex')}`;
  const queues = createQueues({ connection, prefix, defaults: { attempts: 3, backoffMs: 1000 } });
  try {
    await dataSource.initialize();
    await runMigrations(dataSource);
    await seedFleet(sim, dataSource, o);

    const hetzner = new HetznerClient({ baseUrl: sim.hetznerUrl, token: SIM_DEFAULT_CREDENTIALS.hetznerToken });
    const tailscale = new TailscaleClient({
      baseUrl: sim.tailscaleUrl,
      clientId: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
      clientSecret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
    });
    await tailscale.listDevices(); // mint the OAuth token outside the measured passes
    const repositories = createRepositories(dataSource);
    const ledger = new OperationLedger({ dataSource, repositories, logger: silentLogger });
    const outbox = new Outbox({ queues, connection, logger: silentLogger });
    const fleet = new Fleet();
    const reconciler = new Reconciler({
      dataSource,
      repositories,
      ledger,
      outbox,
      fleet,
      guard: new OwnershipGuard({ hetzner, tailscale, fleet, audit: repositories.findings, logger: silentLogger }),
      reports: new ReconcileReports({ dataSource, repositories, ledger, outbox }),
      hetzner,
      tailscale,
      queues,
      logger: silentLogger,
      settings: {
        orphans: 'report',
        graceSeconds: 0,
        tags: ['tag:agent'],
        stuckAfterMs: stuckTimeouts({ actionTimeoutMs: 600_000, shutdownTimeoutMs: 60_000, enrollmentTimeoutMs: 300_000 }),
      },
    });

    const passes: ReconcileBenchResult['passes'] = [];
    for (let pass = 1; pass <= 2; pass++) {
      sim.control.resetRequestCounts();
      const started = performance.now();
      const report = await reconciler.runPass({ trigger: 'manual' });
      const wallMs = performance.now() - started;
      const counts = cloudCounts(sim);
      passes.push({
        pass,
        hetznerRequests: counts.hetzner,
        tailscaleRequests: counts.tailscale,
        byRoute: counts.byRoute,
        wallMs,
        summary: report.summary,
      });
    }

    const labelled = o.servers - o.deleted + o.orphanServers;
    const pages = Math.ceil(labelled / PAGE);
    const [first, second] = passes as [ReconcileBenchResult['passes'][0], ReconcileBenchResult['passes'][0]];
    // Confirming reads: one per server absent from the listing (the deleted ones), first pass only.
    const firstBudget = pages + o.deleted;
    const rows: ReconcileBenchRow[] = [
      {
        bench: 'reconcile',
        metric: `hetzner requests, pass 1 (${o.servers} servers, ${o.poweredOff + o.deleted} drifted)`,
        value: String(first.hetznerRequests),
        target: `≤ ${firstBudget} (${pages} pages + ${o.deleted} confirms)`,
        met: first.hetznerRequests <= firstBudget,
      },
      {
        bench: 'reconcile',
        metric: 'hetzner requests, pass 2 (nothing new)',
        value: String(second.hetznerRequests),
        target: `≤ ${pages} (pages of ${PAGE})`,
        met: second.hetznerRequests <= pages,
      },
      {
        bench: 'reconcile',
        metric: 'tailscale requests per pass',
        value: `${first.tailscaleRequests} / ${second.tailscaleRequests}`,
        target: '1 device listing',
        met: first.tailscaleRequests === 1 && second.tailscaleRequests === 1,
      },
      {
        bench: 'reconcile',
        metric: 'findings, pass 1 (drifted / orphan servers / orphan devices)',
        value: `${first.summary.driftedInstances} / ${first.summary.orphanServers} / ${first.summary.orphanDevices}`,
        // Each deleted server's device is orphaned too once its instance fails.
        target: `${o.poweredOff + o.deleted} / ${o.orphanServers} / ${o.orphanDevices + o.deleted}`,
        met:
          first.summary.driftedInstances === o.poweredOff + o.deleted &&
          first.summary.orphanServers === o.orphanServers &&
          first.summary.orphanDevices === o.orphanDevices + o.deleted,
      },
      {
        bench: 'reconcile',
        metric: 'new findings, pass 2',
        value: String(second.summary.newFindings),
        target: '0',
        met: second.summary.newFindings === 0,
      },
      { bench: 'reconcile', metric: 'pass duration (1 / 2)', value: `${(first.wallMs / 1000).toFixed(2)} s / ${(second.wallMs / 1000).toFixed(2)} s` },
    ];
    return { requestsPerPass: first.hetznerRequests + first.tailscaleRequests, options: o, passes, rows };
  } finally {
    for (const q of Object.values(queues)) await q.obliterate({ force: true }).catch(() => undefined);
    await closeQueues(queues);
    await connection.quit();
    if (dataSource.isInitialized) await dataSource.destroy();
    await dropDatabase(ADMIN_URL, database);
    await sim.close();
  }
}

/** Servers and devices straight into the simulator, matching rows straight into the database. */
async function seedFleet(sim: RunningSimulator, ds: import('typeorm').DataSource, o: ReconcileBenchOptions): Promise<void> {
  const c = sim.control;
  const managed = { [MANAGED_LABEL.key]: MANAGED_LABEL.value };
  const serverIds: number[] = [];
  const deviceIds: string[] = [];
  const hostnames: string[] = [];
  const ips: string[] = [];
  for (let i = 0; i < o.servers; i++) {
    const name = `bench-${i}`;
    const server = c.createServer({ name, status: 'running', labels: managed });
    const device = c.createDevice({ hostname: name, tags: ['tag:agent'], serverId: server.id });
    serverIds.push(server.id);
    deviceIds.push(device.id);
    hostnames.push(name);
    ips.push(device.addresses[0]!);
  }
  await ds.query(
    `WITH a AS (
       INSERT INTO agents (name, status)
       SELECT h, 'active' FROM unnest($1::text[]) AS h
       RETURNING id, name
     )
     INSERT INTO instances (agent_id, server_id, server_name, tailscale_device_id, tailscale_ip, tailscale_hostname,
                            location, server_type, image, status, started_at)
     SELECT a.id, f.server_id, f.h, f.device_id, f.ip::inet, f.h, 'fsn1', 'cx22', 'ubuntu-24.04', 'running', now()
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS f(h, server_id, device_id, ip)
     JOIN a ON a.name = f.h`,
    [hostnames, serverIds, deviceIds, ips],
  );
  for (let i = 0; i < o.poweredOff; i++) c.updateServer(serverIds[i]!, { status: 'off' });
  for (let i = 0; i < o.deleted; i++) c.deleteServer(serverIds[o.poweredOff + i]!);
  for (let i = 0; i < o.orphanServers; i++) c.createServer({ name: `orphan-${i}`, status: 'running', labels: managed });
  for (let i = 0; i < o.orphanDevices; i++) c.createDevice({ hostname: `stray-${i}`, tags: ['tag:agent'] });
  for (let i = 0; i < o.unlabelled; i++) c.createServer({ name: `hand-made-${i}`, status: 'running' });
}

export function reconcileTable(rows: ReconcileBenchRow[]): string {
  const cells = [['metric', 'value', 'target', ''], ...rows.map((r) => [r.metric, r.value, r.target ?? '', r.met === undefined ? '' : r.met ? 'met' : 'MISSED'])];
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

if (require.main === module) {
  const i = process.argv.indexOf('--servers');
  const servers = i >= 0 ? Number(process.argv[i + 1]) : 5000;
  runReconcileBench({ servers: Number.isFinite(servers) && servers > 0 ? servers : 5000 })
    .then((result) => {
      console.log(reconcileTable(result.rows));
      for (const p of result.passes) console.log(`pass ${p.pass}: ${JSON.stringify(p.byRoute)}`);
      const dir = join(__dirname, 'results');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'reconcile.json'), `${JSON.stringify(result, null, 2)}\n`);
      if (result.rows.some((r) => r.met === false)) process.exitCode = 1;
    })
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
