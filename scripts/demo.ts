import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Client } from 'pg';
import { loadConfig } from '../src/config';
import { createDatabase, databaseUrl } from '../src/db/admin';
import { createLogger } from '../src/lib/logger';
import { createTailfleet } from '../src/server';
import { startSimulator } from '../src/simulator';

/**
 * `npm run demo`: the cloud simulator and tailfleet (API + workers + Bull Board) in one process,
 * against the local PostgreSQL and Redis, then three agents created through the HTTP API.
 * Env: DATABASE_URL (an admin connection; the demo uses its own database `tailfleet_demo`),
 * REDIS_URL, PORT (3000), SIM_PORT (4010), LOG_LEVEL (warn).
 */

const DEMO_DATABASE = 'tailfleet_demo';
const AGENTS = 3;

async function portOrRandom(preferred: number): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(0));
    probe.listen(preferred, '127.0.0.1', () => probe.close(() => resolve(preferred)));
  });
}

async function ensureDatabase(adminUrl: string): Promise<string> {
  const client = new Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DEMO_DATABASE]);
    if (rowCount) return databaseUrl(adminUrl, DEMO_DATABASE);
  } finally {
    await client.end();
  }
  console.log(`Creating database ${DEMO_DATABASE}`);
  return createDatabase(adminUrl, DEMO_DATABASE);
}

async function main(): Promise<void> {
  const adminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const logLevel = process.env.LOG_LEVEL ?? 'warn';

  // Demo-scale timings: actions take 1–3 s, enough to watch jobs move in Bull Board.
  const sim = await startSimulator({ port: await portOrRandom(Number(process.env.SIM_PORT ?? 4010)), host: '127.0.0.1' });
  const apiToken = randomBytes(24).toString('base64url');
  const config = loadConfig({
    DATABASE_URL: await ensureDatabase(adminUrl),
    REDIS_URL: redisUrl,
    HETZNER_API_URL: sim.hetznerUrl,
    HETZNER_API_TOKEN: 'demo-hetzner-token',
    TAILSCALE_API_URL: sim.tailscaleUrl,
    TAILSCALE_OAUTH_CLIENT_ID: 'demo-client',
    TAILSCALE_OAUTH_CLIENT_SECRET: 'demo-secret',
    API_TOKEN: apiToken,
    HOST: '127.0.0.1',
    PORT: String(await portOrRandom(Number(process.env.PORT ?? 3000))),
    QUEUE_PREFIX: 'tailfleet-demo',
    POLL_INTERVAL_MS: '250',
    JOB_BACKOFF_MS: '1000',
    ROLLBACK_SWEEP_INTERVAL_SECONDS: '30',
    LOG_LEVEL: logLevel,
  });
  const tailfleet = createTailfleet(config, { logger: createLogger({ level: logLevel, name: 'tailfleet-demo' }) });

  let stopping = false;
  const shutdown = async () => {
    if (stopping) process.exit(130);
    stopping = true;
    console.log('\nStopping…');
    await tailfleet.stop();
    await sim.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown());
  process.on('SIGTERM', () => void shutdown());

  await tailfleet.start();
  const url = tailfleet.url!;
  console.log(`
tailfleet demo
  API          ${url}/v1        (OpenAPI: ${url}/v1/openapi.json)
  API token    ${apiToken}
  Bull Board   ${url}/admin/queues   login: ${config.http.boardUser} / ${config.http.boardPassword}
  Metrics      ${url}/metrics
  Simulator    ${sim.url}   (state: ${sim.url}/_sim/state)

Try:
  export API_TOKEN=${apiToken}
  curl -s -H "Authorization: Bearer $API_TOKEN" ${url}/v1/agents
`);

  const headers = { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' };
  const suffix = randomBytes(2).toString('hex');
  const created: { id: string; name: string }[] = [];
  for (let i = 1; i <= AGENTS; i++) {
    const name = `demo-${suffix}-${i}`;
    const res = await fetch(`${url}/v1/agents`, { method: 'POST', headers, body: JSON.stringify({ name }) });
    const body = (await res.json()) as any;
    if (res.status !== 201) throw new Error(`POST /v1/agents answered ${res.status}: ${JSON.stringify(body)}`);
    created.push({ id: body.agent.id, name });
    console.log(`Created agent ${name} (${body.agent.id}); provision operation ${body.operation.id} queued`);
  }

  const pending = new Map(created.map((a) => [a.id, a]));
  const started = Date.now();
  while (pending.size > 0 && !stopping) {
    for (const agent of [...pending.values()]) {
      const res = await fetch(`${url}/v1/agents/${agent.id}`, { headers });
      const body = (await res.json()) as any;
      const instance = body.instance;
      if (instance?.status === 'running') {
        pending.delete(agent.id);
        const secs = ((Date.now() - started) / 1000).toFixed(1);
        console.log(
          `Agent ${agent.name} is running after ${secs}s: server ${instance.serverId} (${instance.serverIp}), tailnet ${instance.tailscaleIp}`,
        );
      } else if (body.agent?.status === 'error') {
        pending.delete(agent.id);
        console.log(`Agent ${agent.name} failed to provision and was rolled back: ${instance?.error ?? 'see its events'}`);
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!stopping) console.log('\nAll agents are up. tailfleet keeps running; press Ctrl-C to stop.');
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : err);
  process.exit(1);
});
