import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Client } from 'pg';
import { loadConfig } from '../src/config';
import { createDatabase, dropDatabase } from '../src/db/admin';
import { createLogger } from '../src/lib/logger';
import { deleteRedisPrefix } from '../src/lib/redis-keys';
import { createTailfleet } from '../src/server';
import { simulatorEnv, startSimulator } from '../src/simulator';

/**
 * `npm run demo`: the cloud simulator and tailfleet (API + workers + Bull Board) in one process,
 * against the local PostgreSQL and Redis, then three agents created through the HTTP API.
 * Env: DATABASE_URL (an admin connection; the demo uses its own database `tailfleet_demo`, emptied
 * at every start like the simulator, and the queue prefix `tailfleet-demo`),
 * REDIS_URL, PORT (3000), SIM_PORT (4010), LOG_LEVEL (warn).
 */

const DEMO_DATABASE = 'tailfleet_demo';
const DEMO_QUEUE_PREFIX = 'tailfleet-demo';
const AGENTS = 3;

async function portOrRandom(preferred: number): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(0));
    probe.listen(preferred, '127.0.0.1', () => probe.close(() => resolve(preferred)));
  });
}

/**
 * The simulator keeps its cloud in memory, so agents of an earlier run would point at servers that
 * no longer exist: every run starts from an empty database and empty queues.
 */
async function freshState(adminUrl: string, redisUrl: string): Promise<string> {
  const client = new Client({ connectionString: adminUrl });
  await client.connect();
  let exists: boolean;
  try {
    exists = Boolean((await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DEMO_DATABASE])).rowCount);
  } finally {
    await client.end();
  }
  if (exists) await dropDatabase(adminUrl, DEMO_DATABASE);
  console.log(`${exists ? 'Recreating' : 'Creating'} database ${DEMO_DATABASE}`);
  const url = await createDatabase(adminUrl, DEMO_DATABASE);

  await deleteRedisPrefix(redisUrl, DEMO_QUEUE_PREFIX);
  return url;
}

async function main(): Promise<void> {
  const adminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const logLevel = process.env.LOG_LEVEL ?? 'warn';

  // Demo-scale timings: actions take 1–3 s, enough to watch jobs move in Bull Board.
  const sim = await startSimulator({ port: await portOrRandom(Number(process.env.SIM_PORT ?? 4010)), host: '127.0.0.1' });
  const apiToken = randomBytes(24).toString('base64url');
  const config = loadConfig({
    DATABASE_URL: await freshState(adminUrl, redisUrl),
    REDIS_URL: redisUrl,
    ...simulatorEnv(sim),
    API_TOKEN: apiToken,
    BULL_BOARD_USER: 'admin',
    BULL_BOARD_PASSWORD: randomBytes(12).toString('base64url'),
    HOST: '127.0.0.1',
    PORT: String(await portOrRandom(Number(process.env.PORT ?? 3000))),
    QUEUE_PREFIX: DEMO_QUEUE_PREFIX,
    POLL_INTERVAL_MS: '250',
    JOB_BACKOFF_MS: '1000',
    ROLLBACK_SWEEP_INTERVAL_SECONDS: '30',
    LOG_LEVEL: logLevel,
  });
  const tailfleet = createTailfleet(config, { logger: createLogger({ level: logLevel, name: 'tailfleet-demo' }) });

  let stopping = false;
  let stoppingAt = 0;
  const shutdown = async () => {
    if (stopping) {
      // npm, tsx and the terminal may each deliver the same Ctrl-C; a later one means "now".
      if (Date.now() - stoppingAt > 1000) process.exit(130);
      return;
    }
    stopping = true;
    stoppingAt = Date.now();
    console.log('\nStopping (running jobs finish first; Ctrl-C again to quit at once)…');
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
  Bull Board   ${url}/admin/queues   login: ${config.http.board?.user} / ${config.http.board?.password}
  Metrics      ${url}/metrics
  Simulator    ${sim.url}   (state: ${sim.url}/_sim/state)

Try:
  export API_TOKEN=${apiToken}
  curl -s -H "Authorization: Bearer $API_TOKEN" ${url}/v1/agents
  TAILFLEET_URL=${url} TAILFLEET_TOKEN=$API_TOKEN npm run -s cli -- agents list
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
      // Ctrl-C closes the API under this loop; that is the end of it, not an error.
      const body = await fetch(`${url}/v1/agents/${agent.id}`, { headers }).then(
        (res) => res.json() as Promise<any>,
        (err: unknown) => {
          if (stopping) return undefined;
          throw err;
        },
      );
      if (!body) return;
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
