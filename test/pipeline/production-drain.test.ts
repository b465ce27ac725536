import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { expect } from 'chai';
import { productionBuild } from '../helpers/build';
import { apiClient, createSuite, stackEnv, waitFor, type Suite } from './stack';

// The compiled production process (`node dist/src/main.js`, what the image runs) drains on SIGTERM:
// the job in flight finishes, or past DRAIN_TIMEOUT_SECONDS is handed back, and the process exits 0.

const ROOT = path.resolve(__dirname, '../..');

interface Running {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

describe('pipeline: the compiled process drains on SIGTERM', function () {
  this.timeout(120_000);

  let suite: Suite;
  let outDir: string;
  const children: ChildProcess[] = [];

  const opStatus = async (id: string) =>
    ((await suite.db.dataSource.query(`SELECT status, attempts, error FROM operations WHERE id = $1`, [id])) as any[])[0];

  before(async () => {
    // The production build (tsconfig.build.json), into a directory of its own; node finds the
    // dependencies through NODE_PATH as the image finds them next to dist/.
    outDir = await productionBuild();
    suite = await createSuite('production_drain');
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await suite?.close();
  });

  async function startProcess(env: Record<string, string>): Promise<Running> {
    const child = spawn(process.execPath, [path.join(outDir, 'src/main.js')], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        NODE_PATH: path.join(ROOT, 'node_modules'),
        NODE_ENV: 'production',
        ...stackEnv(suite, { ROLE: 'all', LOG_LEVEL: 'info', RECONCILE_INTERVAL_SECONDS: '0', ...env }),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    // PORT=0: the process picks a free port and logs its URL.
    const url = await waitFor(
      'the process to listen',
      () => {
        if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}: ${output.slice(-2000)}`);
        const listening = output
          .split('\n')
          .filter((line) => line.startsWith('{'))
          .map((line) => JSON.parse(line) as { url?: string; msg?: string })
          .find((entry) => entry.msg?.startsWith('tailfleet API listening on'));
        return listening?.url;
      },
      { timeoutMs: 30_000 },
    );
    return { child, url, output: () => output, exited };
  }

  async function agentWithInFlightStop(url: string, name: string, shutdownMs: number): Promise<string> {
    const api = apiClient(url, suite.apiToken);
    suite.sim.control.setTimings({ shutdownMs: 20 });
    const created = await api.post('/v1/agents', { name });
    expect(created.status).to.equal(201);
    await waitFor('the provision to succeed', async () => (await opStatus(created.body.operation.id)).status === 'succeeded', {
      timeoutMs: 20_000,
    });
    // The server now takes this long to honour ACPI: the stop job is still waiting when SIGTERM comes.
    suite.sim.control.setTimings({ shutdownMs });
    const stop = await api.post(`/v1/agents/${created.body.agent.id}/stop`);
    expect(stop.status).to.equal(202);
    const op = stop.body.operation.id as string;
    await waitFor('the stop to be in flight', async () => (await opStatus(op)).status === 'running');
    return op;
  }

  it('finishes the job in flight, then exits 0 well within DRAIN_TIMEOUT_SECONDS', async () => {
    const drainSeconds = 10;
    const p = await startProcess({ DRAIN_TIMEOUT_SECONDS: String(drainSeconds), QUEUE_PREFIX: `${suite.prefix}:finish` });
    const op = await agentWithInFlightStop(p.url, 'drain-finish', 1500);

    const sent = Date.now();
    p.child.kill('SIGTERM');
    const [code, signal] = await p.exited;
    const tookMs = Date.now() - sent;
    expect({ code, signal }, p.output().slice(-3000)).to.deep.equal({ code: 0, signal: null });
    expect(tookMs).to.be.below(drainSeconds * 1000);
    expect(p.output()).to.include('SIGTERM received, shutting down');
    expect(p.output()).to.include('"msg":"Shutting down"');
    expect(p.output()).to.include('Workers drained');
    expect(p.output()).to.include('Shutdown complete');
    expect((await opStatus(op)).status).to.equal('succeeded');
  });

  it('past the drain deadline hands the job back and still exits 0 within the deadline and its margin', async () => {
    const drainSeconds = 1;
    const p = await startProcess({ DRAIN_TIMEOUT_SECONDS: String(drainSeconds), QUEUE_PREFIX: `${suite.prefix}:deadline` });
    const op = await agentWithInFlightStop(p.url, 'drain-deadline', 20_000);

    const sent = Date.now();
    p.child.kill('SIGTERM');
    const [code, signal] = await p.exited;
    const tookMs = Date.now() - sent;
    expect({ code, signal }, p.output().slice(-3000)).to.deep.equal({ code: 0, signal: null });
    // The drain deadline, then at most the grace the workers get to hand their jobs back.
    expect(tookMs).to.be.at.least(drainSeconds * 1000 - 100).and.below(drainSeconds * 1000 + 7_000);
    expect(p.output()).to.include('Workers stopped before their jobs finished');
    const interrupted = await opStatus(op);
    expect(interrupted.status).to.equal('queued');
    expect(interrupted.error).to.match(/Interrupted by worker shutdown/);
  });
});
