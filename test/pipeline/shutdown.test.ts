import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, stackEnv, waitFor, type ApiClient, type Suite } from './stack';

// SIGTERM must not lose work: jobs in flight finish (or, past the drain deadline, are left for
// another worker to recover), jobs not started stay queued for the next worker.

const ROOT = path.resolve(__dirname, '../..');

describe('pipeline: graceful shutdown', function () {
  this.timeout(90_000);

  let suite: Suite;
  let apiOnly: Tailfleet;
  let api: ApiClient;
  let agents: string[];
  let child: ChildProcess | undefined;

  const opStatus = async (id: string) =>
    ((await suite.db.dataSource.query(`SELECT status, attempts, error FROM operations WHERE id = $1`, [id])) as any[])[0];

  before(async () => {
    suite = await createSuite('pipeline_shutdown');
    const all = await suite.launch();
    const setupApi = apiClient(all.url!, suite.apiToken);
    const ops: string[] = [];
    agents = [];
    for (let i = 0; i < 5; i++) {
      const res = await setupApi.post('/v1/agents', { name: `drain-${i}` });
      expect(res.status).to.equal(201);
      agents.push(res.body.agent.id);
      ops.push(res.body.operation.id);
    }
    for (const op of ops) await waitFor('provision', async () => (await opStatus(op)).status === 'succeeded');
    await all.stop();

    // From here on only an API process runs in this test process; workers come and go.
    apiOnly = await suite.launch({ env: { ROLE: 'api' } });
    expect(apiOnly.workers).to.equal(undefined);
    api = apiClient(apiOnly.url!, suite.apiToken);
  });

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await suite?.close();
  });

  it('SIGTERM: in-flight jobs finish, queued ones wait for the next worker, nothing is lost', async () => {
    // Each stop now takes about a second (the server honours ACPI after shutdownMs).
    suite.sim.control.setTimings({ shutdownMs: 1000 });
    const env = {
      ...process.env,
      ...stackEnv(suite, { ROLE: 'worker', WORKER_CONCURRENCY: '2', DRAIN_TIMEOUT_SECONDS: '20', LOG_LEVEL: 'info' }),
    };
    // node itself with tsx's loader, not the tsx wrapper: the wrapper relays SIGTERM to its own child
    // and, when that child's listener is not yet known to it, exits 143 on its own.
    child = spawn(process.execPath, ['--require', 'tsx/cjs', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = once(child, 'exit');

    await waitFor('the child worker to connect', async () => (await apiOnly.queues.stop.getWorkersCount()) > 0, {
      timeoutMs: 30_000,
    });

    const ops: string[] = [];
    for (const agentId of agents.slice(0, 4)) {
      const res = await api.post(`/v1/agents/${agentId}/stop`);
      expect(res.status).to.equal(202);
      ops.push(res.body.operation.id);
    }
    const inFlight = await waitFor('two stops to be running', async () => {
      const statuses = await Promise.all(ops.map(opStatus));
      const running = ops.filter((_, i) => statuses[i].status === 'running');
      return running.length === 2 ? running : undefined;
    });

    const sent = Date.now();
    child.kill('SIGTERM');
    const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
    const tookMs = Date.now() - sent;
    expect({ code, signal }, output.slice(-3000)).to.deep.equal({ code: 0, signal: null });
    expect(tookMs).to.be.below(20_000);
    expect(output).to.include('Workers drained');

    // The two in flight were finished by the exiting worker, not abandoned.
    for (const op of inFlight) expect((await opStatus(op)).status).to.equal('succeeded');
    const rest = ops.filter((op) => !inFlight.includes(op));
    for (const op of rest) expect((await opStatus(op)).status).to.equal('queued');

    const next = await suite.launch({ env: { ROLE: 'worker' } });
    for (const op of ops) {
      await waitFor(`operation ${op} to succeed`, async () => (await opStatus(op)).status === 'succeeded', { timeoutMs: 20_000 });
    }
    for (const agentId of agents.slice(0, 4)) {
      const res = await api.get(`/v1/agents/${agentId}`);
      expect(res.body.agent.status).to.equal('paused');
      expect(res.body.instance.status).to.equal('stopped');
    }
    await next.stop();
  });

  it('past the drain deadline: the unfinished job goes back to waiting, spending no attempt, and another worker finishes it', async () => {
    // A stop that outlasts the 1 s drain deadline.
    suite.sim.control.setTimings({ shutdownMs: 2500 });
    // Queues of their own: BullMQ lets one stalled check run per stalledInterval per queue, and the
    // worker of the previous test announced the production interval (30 s) on the shared queues.
    const env = { QUEUE_PREFIX: `${suite.prefix}:deadline` };
    const settings = { lockDurationMs: 1000, stalledIntervalMs: 250 };
    const producer = await suite.launch({ env: { ...env, ROLE: 'api' } });
    const first = await suite.launch({ env: { ...env, ROLE: 'worker', DRAIN_TIMEOUT_SECONDS: '1' }, overrides: { worker: settings } });

    const agentId = agents[4]!;
    const res = await apiClient(producer.url!, suite.apiToken).post(`/v1/agents/${agentId}/stop`);
    expect(res.status).to.equal(202);
    const op = res.body.operation.id as string;
    await waitFor('the stop to run', async () => (await opStatus(op)).status === 'running');

    const started = Date.now();
    await first.stop();
    const tookMs = Date.now() - started;
    expect(tookMs).to.be.within(900, 4_000);

    const interrupted = await opStatus(op);
    expect(interrupted.status).to.equal('queued');
    expect(interrupted.error).to.match(/Interrupted by worker shutdown/);
    expect(await producer.queues.stop.getJobState(`op-${op}`)).to.be.oneOf(['waiting', 'delayed']);
    const job = await producer.queues.stop.getJob(`op-${op}`);
    expect(job!.attemptsMade, 'attempts spent by the interrupted run').to.equal(0);

    // The production stalled-check interval: the job must not need a stall to come back.
    const second = await suite.launch({ env: { ...env, ROLE: 'worker' }, overrides: { worker: { lockDurationMs: 30_000, stalledIntervalMs: 30_000 } } });
    await waitFor('the recovered stop to succeed', async () => (await opStatus(op)).status === 'succeeded', { timeoutMs: 20_000 });
    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('paused');
    expect(suite.sim.control.state().servers.find((s) => s.labels['tailfleet-agent'] === agentId)?.status).to.equal('off');
    expect(await producer.queues.stop.getJobState(`op-${op}`)).to.equal('completed');
    await second.stop();
  });
});
