import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Tailfleet } from '../../src/server';
import { REPORTER_PATHS, reporterScript } from '../../src/workflows/cloud-init';
import { operationEnded } from '../helpers/launched';
import { apiClient, createSuite, type ApiClient, type Suite } from '../pipeline/stack';

// The activity reporter as an agent's machine gets it: provisioned through the API and the simulator
// with TAILFLEET_PUBLIC_URL set, its user data read by Debian's cloud-init (process_user_data.py,
// as the user-data tests drive it), the files the join script writes taken from the script cloud-init
// would run, and the reporter itself run with bash against the live API. `cloud-init` on the PATH is
// a stand-in answering `status --wait` as the machine's own would (there is no booting machine here);
// who, ss, /proc/loadavg and curl are this machine's own.

const DRIVER = join(__dirname, 'process_user_data.py');

function findPython(): string {
  for (const python of [process.env.CLOUD_INIT_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)) {
    if (spawnSync(python, ['-c', 'import cloudinit.user_data'], { stdio: 'ignore' }).status === 0) return python;
  }
  throw new Error('No python3 can import cloud-init: apt-get install -y --no-install-recommends cloud-init, or set CLOUD_INIT_PYTHON');
}

/** The body of the here-document the join script writes to `path`. */
function heredoc(script: string, path: string): string {
  const m = new RegExp(`cat > ${path.replace(/[.]/g, '\\.')} <<'TAILFLEET_EOF'\\n([\\s\\S]*?)\\nTAILFLEET_EOF`).exec(script);
  if (!m) throw new Error(`the join script writes no ${path}`);
  return `${m[1]}\n`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('cloud-init: the activity reporter, installed by the join and run against the API', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let scratch: string;
  let joinScript: string;
  let agentId: string;
  let publicUrl: string;

  before(async () => {
    const python = findPython();
    scratch = mkdtempSync(join(tmpdir(), 'tailfleet-reporter-'));
    suite = await createSuite('reporter');
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    tf = await suite.launch({ env: { PORT: String(port), TAILFLEET_PUBLIC_URL: `${publicUrl}/` } });
    api = apiClient(tf.url!, suite.apiToken);
    const created = await api.post('/v1/agents', { name: 'reported', userData: '#cloud-config\nruncmd:\n  - echo app\n' });
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    agentId = created.body.agent.id;
    expect((await operationEnded(api, created.body.operation.id)).operation.status).to.equal('succeeded');
    const server = suite.sim.control.state().servers.find((s) => s.labels['tailfleet-agent'] === agentId)!;
    const read = spawnSync(python, [DRIVER], { input: server._sim.userData!, encoding: 'utf8', timeout: 60_000 });
    expect(read.status, read.stderr).to.equal(0);
    const report = JSON.parse(read.stdout) as { scripts: Array<{ stage: string; name: string; content: string }>; warnings: string[] };
    expect(report.warnings).to.deep.equal([]);
    // The join (with the reporter's installation) is the first script the final stage runs; the agent's own follows.
    expect(report.scripts.map((s) => s.name)).to.deep.equal(['(tailfleet-join)', 'runcmd']);
    joinScript = report.scripts[0]!.content;
  });

  after(async () => {
    await suite?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('installs the script, its credential (mode 0600) and the systemd timer after the tailnet join, and is valid sh', () => {
    const up = joinScript.indexOf('tailscale up');
    expect(up).to.be.greaterThan(0);
    expect(joinScript.indexOf(REPORTER_PATHS.env)).to.be.greaterThan(up);
    expect(joinScript).to.include('(umask 077 && cat > /etc/tailfleet/reporter.env');
    expect(joinScript).to.include('systemctl enable --now tailfleet-reporter.timer');
    expect(joinScript).to.include('systemctl start --no-block tailfleet-bootstrap-report.service');
    expect(heredoc(joinScript, REPORTER_PATHS.script)).to.equal(reporterScript());
    expect(heredoc(joinScript, '/etc/systemd/system/tailfleet-reporter.timer')).to.match(/OnUnitActiveSec=1min/);
    expect(spawnSync('sh', ['-n'], { input: joinScript }).status).to.equal(0);
    expect(spawnSync('bash', ['-n'], { input: reporterScript() }).status).to.equal(0);
    const env = heredoc(joinScript, REPORTER_PATHS.env);
    expect(env).to.include(`TAILFLEET_URL='${publicUrl}'`);
    expect(env).to.include(`TAILFLEET_AGENT_ID='${agentId}'`);
    expect(env).to.match(/^TAILFLEET_AGENT_TOKEN='tf_[A-Za-z0-9_-]{43}'$/m);
  });

  describe('run with bash', () => {
    let script: string;
    let envFile: string;
    let bin: string;

    before(() => {
      script = join(scratch, 'reporter.sh');
      envFile = join(scratch, 'reporter.env');
      bin = join(scratch, 'bin');
      writeFileSync(script, heredoc(joinScript, REPORTER_PATHS.script), { mode: 0o755 });
      writeFileSync(envFile, heredoc(joinScript, REPORTER_PATHS.env), { mode: 0o600 });
      spawnSync('mkdir', ['-p', bin]);
    });

    const standIn = (exitCode: number, statusLine: string) => {
      const path = join(bin, 'cloud-init');
      writeFileSync(path, `#!/bin/sh\n[ "$2" = "--wait" ] && exit ${exitCode}\necho "${statusLine}"\nexit ${exitCode}\n`);
      chmodSync(path, 0o755);
    };
    const reporter = (verb: string, extra: Record<string, string> = {}) =>
      run('bash', [script, verb], { TAILFLEET_REPORTER_ENV: envFile, TAILFLEET_BUSY_FILE: join(scratch, 'busy'), PATH: `${bin}:${process.env.PATH}`, ...extra });

    it('posts a heartbeat with the sessions, the load and busy while the busy file exists', async () => {
      expect(statSync(envFile).mode & 0o777).to.equal(0o600);
      const idle = await reporter('heartbeat');
      expect(idle, idle.stderr).to.include({ code: 0 });
      let agent = (await api.get(`/v1/agents/${agentId}`)).body.agent;
      const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
      expect(agent.heartbeat.busy).to.equal(false);
      expect(agent.heartbeat.sessions).to.be.a('number').and.at.least(0);
      expect(agent.heartbeat.load).to.be.closeTo(load, 5);

      writeFileSync(join(scratch, 'busy'), '');
      expect((await reporter('heartbeat')).code).to.equal(0);
      agent = (await api.get(`/v1/agents/${agentId}`)).body.agent;
      expect(agent.heartbeat.busy).to.equal(true);
      expect(agent.lastActivity.kind).to.equal('heartbeat-busy');
      rmSync(join(scratch, 'busy'));
    });

    it('reports the bootstrap: error with the status line, then done (the agent is ready)', async () => {
      standIn(1, 'status: error');
      expect((await reporter('bootstrap')).code).to.equal(0);
      let agent = (await api.get(`/v1/agents/${agentId}`)).body.agent;
      expect(agent.bootstrap).to.include({ status: 'error', detail: 'status: error' });
      expect(agent.ready).to.equal(false);

      standIn(0, 'status: done');
      expect((await reporter('bootstrap')).code).to.equal(0);
      agent = (await api.get(`/v1/agents/${agentId}`)).body.agent;
      expect(agent.bootstrap.status).to.equal('done');
      expect(agent.ready).to.equal(true);
    });

    it('fails (curl) with a credential that is not valid, and leaves the agent as it was', async () => {
      const wrongEnv = join(scratch, 'wrong.env');
      writeFileSync(wrongEnv, readFileSync(envFile, 'utf8').replace(/TAILFLEET_AGENT_TOKEN='[^']+'/, `TAILFLEET_AGENT_TOKEN='tf_${'x'.repeat(43)}'`));
      const before = (await api.get(`/v1/agents/${agentId}`)).body.agent.heartbeat;
      const res = await reporter('heartbeat', { TAILFLEET_REPORTER_ENV: wrongEnv });
      expect(res.code).to.equal(22); // curl -f: HTTP 401
      expect((await api.get(`/v1/agents/${agentId}`)).body.agent.heartbeat).to.deep.equal(before);
    });
  });
});
