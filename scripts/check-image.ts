import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { deleteRedisPrefix } from '../src/lib/redis-keys';
import { simulatorEnv, startSimulator } from '../src/simulator';
import { execForm, parseCopy, parseDockerfile, parseEnv, parseHealthcheck, type Stage } from './dockerfile';

/**
 * `npm run check:image`: builds the image the way the Dockerfile says, without Docker. Every stage
 * gets a temporary directory standing in for its WORKDIR; COPY and RUN lines are replayed there
 * (so `npm ci`, `npm run build`, `npm ci --omit=dev` really run). Then the final stage's CMD is
 * started against the local PostgreSQL (a scratch database) and Redis (a queue prefix of its own)
 * with the simulator as the cloud, the Dockerfile's HEALTHCHECK command must pass, /readyz must
 * answer 200, and SIGTERM must end the process with code 0.
 *
 * Env: DATABASE_URL (admin connection, default postgres://postgres@127.0.0.1:5432/postgres),
 * REDIS_URL, KEEP=1 keeps the temporary directories. The host's node runs the stages, whatever
 * version the FROM lines name.
 */

const ROOT = path.resolve(__dirname, '..');
const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function log(msg: string): void {
  process.stdout.write(`check-image: ${msg}\n`);
}

/** The host's environment without what `npm run` adds (npm_config_*, npm_lifecycle_*): a docker build has none of it. */
function hostEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !/^npm_/i.test(e[0])),
  );
}

function dockerignore(): Set<string> {
  const file = path.join(ROOT, '.dockerignore');
  if (!existsSync(file)) return new Set();
  return new Set(
    readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => l.trim().replace(/^\/+|\/+$/g, ''))
      .filter((l) => l && !l.startsWith('#')),
  );
}

/** Maps an absolute path inside a stage's image (/app/dist) to its directory here. */
function inStage(root: string, workdir: string, p: string): string {
  const abs = p.startsWith('/') ? p : path.posix.join(workdir, p);
  return path.join(root, abs);
}

function copy(src: string, dest: string, intoDir: boolean): void {
  if (!existsSync(src)) throw new Error(`COPY source ${src} does not exist`);
  // Docker copies a directory's contents, not the directory itself.
  const target = intoDir && !statSync(src).isDirectory() ? path.join(dest, path.basename(src)) : dest;
  mkdirSync(path.dirname(target), { recursive: true });
  cpSync(src, target, { recursive: true });
}

function buildStages(stages: Stage[], base: string): { root: string; workdir: string; env: Record<string, string> }[] {
  const ignored = dockerignore();
  const built: { root: string; workdir: string; env: Record<string, string>; name?: string }[] = [];
  for (const [index, stage] of stages.entries()) {
    const root = path.join(base, `stage-${index}${stage.name ? `-${stage.name}` : ''}`);
    mkdirSync(root, { recursive: true });
    const state = { root, workdir: '/', env: {} as Record<string, string>, name: stage.name };
    log(`stage ${index} (${stage.name ?? 'unnamed'}, FROM ${stage.base}) in ${root}`);
    for (const ins of stage.instructions) {
      switch (ins.keyword) {
        case 'WORKDIR':
          state.workdir = ins.args.trim().startsWith('/') ? ins.args.trim() : path.posix.join(state.workdir, ins.args.trim());
          mkdirSync(inStage(root, state.workdir, '.'), { recursive: true });
          break;
        case 'ENV':
          Object.assign(state.env, parseEnv(ins.args));
          break;
        case 'COPY': {
          const { from, sources, dest } = parseCopy(ins.args);
          const target = inStage(root, state.workdir, dest);
          const intoDir = dest.endsWith('/') || dest === '.' || sources.length > 1;
          for (const source of sources) {
            if (from !== undefined) {
              const origin = built.find((b, i) => b.name === from || String(i) === from);
              if (!origin) throw new Error(`line ${ins.line}: no stage ${from}`);
              copy(inStage(origin.root, origin.workdir, source), target, intoDir);
            } else {
              if (ignored.has(source.split('/')[0]!)) throw new Error(`line ${ins.line}: ${source} is excluded by .dockerignore`);
              copy(path.join(ROOT, source), target, intoDir);
            }
          }
          break;
        }
        case 'RUN': {
          log(`  RUN ${ins.args}`);
          const res = spawnSync('bash', ['-c', ins.args], {
            cwd: inStage(root, state.workdir, '.'),
            env: { ...hostEnv(), ...state.env },
            stdio: 'inherit',
          });
          if (res.status !== 0) throw new Error(`line ${ins.line}: RUN ${ins.args} exited with ${res.status}`);
          break;
        }
        default:
          // USER, EXPOSE, HEALTHCHECK, CMD: read below for the final stage.
          break;
      }
    }
    built.push(state);
  }
  return built;
}

async function runFinalStage(stage: Stage, dir: string, imageEnv: Record<string, string>): Promise<void> {
  const cmdLine = stage.instructions.filter((i) => i.keyword === 'CMD').at(-1);
  const cmd = cmdLine && execForm(cmdLine.args);
  if (!cmd) throw new Error('the final stage needs an exec-form CMD');
  const health = stage.instructions.find((i) => i.keyword === 'HEALTHCHECK');
  const healthCmd = health && execForm(parseHealthcheck(health.args).command);
  if (!healthCmd) throw new Error('the final stage needs an exec-form HEALTHCHECK CMD');

  const top = readdirSync(dir).sort();
  log(`runtime stage holds: ${top.join(', ')}`);
  const unexpected = top.filter((n) => !['dist', 'node_modules', 'package.json', 'package-lock.json'].includes(n));
  if (unexpected.length > 0) throw new Error(`the runtime stage holds more than it should: ${unexpected.join(', ')}`);
  // (typescript itself may be there: an optional peer of a production dependency keeps it.)
  for (const dev of ['mocha', 'tsx', 'eslint', 'sinon']) {
    if (existsSync(path.join(dir, 'node_modules', dev))) throw new Error(`dev dependency ${dev} reached the runtime stage`);
  }

  const sim = await startSimulator({ timings: { actionDurationMs: 50, bootMs: 50, enrollDelayMs: 50, shutdownMs: 50 } });
  const database = scratchDatabaseName('check_image');
  const prefix = `tf-check-image-${randomBytes(4).toString('hex')}`;
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const databaseUrl = await createDatabase(ADMIN_URL, database);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    ...imageEnv,
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    ...simulatorEnv(sim),
    API_TOKEN: randomBytes(24).toString('hex'),
    HOST: '127.0.0.1',
    PORT: String(port),
    QUEUE_PREFIX: prefix,
    DRAIN_TIMEOUT_SECONDS: '10',
  };
  log(`starting ${cmd.join(' ')} (port ${port}, database ${database})`);
  const child = spawn(cmd[0]!, cmd.slice(1), { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the process exited with ${child.exitCode}:\n${output.slice(-3000)}`);
      const probe = spawnSync(healthCmd[0]!, healthCmd.slice(1), { cwd: dir, env, timeout: 5000 });
      if (probe.status === 0) break;
      if (Date.now() > deadline) throw new Error(`HEALTHCHECK never passed:\n${output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    log('HEALTHCHECK passed');
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    const body = await ready.text();
    if (ready.status !== 200) throw new Error(`/readyz answered ${ready.status}: ${body}`);
    log(`/readyz: ${body}`);

    const sent = Date.now();
    child.kill('SIGTERM');
    const [code, signal] = await exited;
    log(`SIGTERM: exited with ${code ?? signal} after ${Date.now() - sent} ms`);
    if (code !== 0) throw new Error(`exit ${code ?? signal} after SIGTERM:\n${output.slice(-3000)}`);
    if (!output.includes('Shutdown complete')) throw new Error(`no "Shutdown complete" in the log:\n${output.slice(-3000)}`);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await sim.close();
    await dropDatabase(ADMIN_URL, database).catch(() => undefined);
    await deleteRedisPrefix(REDIS_URL, prefix);
  }
}

async function main(): Promise<void> {
  const stages = parseDockerfile(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
  if (stages.length < 2) throw new Error('the Dockerfile should have a build and a runtime stage');
  const base = mkdtempSync(path.join(tmpdir(), 'tailfleet-image-'));
  const started = Date.now();
  try {
    const built = buildStages(stages, base);
    const final = built.at(-1)!;
    await runFinalStage(stages.at(-1)!, inStage(final.root, final.workdir, '.'), final.env);
    log(`OK in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    if (process.env.KEEP === '1') log(`kept ${base}`);
    else rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`check-image: FAILED: ${(err as Error)?.message ?? String(err)}\n`);
  process.exit(1);
});
