import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, type ApiClient, type Suite } from '../pipeline/stack';
import { createSshKeys } from '../helpers/ssh-keys';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import { ROOT, builtEnv, productionBuild } from '../helpers/build';

// The tailfleet CLI as a user runs it: the built `dist/src/cli/main.js` (the package's `bin`) as a
// child process, against a live tailfleet with workers and the cloud simulator.

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('tailfleet CLI', function () {
  this.timeout(90_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let agentId: string;

  function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
    const base: Record<string, string | undefined> = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TAILFLEET_URL: tf.url,
      TAILFLEET_TOKEN: suite.apiToken,
    };
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [main, '--poll-interval', '50', ...args], {
        cwd: ROOT,
        env: Object.fromEntries(Object.entries({ ...builtEnv(), ...base, ...env }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  }

  const ok = (run: Run) => {
    expect(run.code, `exit code; stderr: ${run.stderr}`).to.equal(0);
    return run;
  };

  let main: string;

  before(async () => {
    main = join(await productionBuild(), 'src', 'cli', 'main.js');
    suite = await createSuite('cli');
    // The pool policy does not run by itself: a pass would stock the pools the tests create (a
    // schedule is in force from its first firing on) between two commands whose output they read.
    tf = await suite.launch({
      env: { RECONCILE_INTERVAL_SECONDS: '0', WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_BACKOFF_MS: '60000' },
      overrides: { poolPolicy: false },
    });
    api = apiClient(tf.url!, suite.apiToken);
    await createSshKeys(suite.sim, ['ops', 'backup']);
  });

  after(async () => {
    await suite?.close();
  });

  it('agents create --wait follows the provision to the end, with progress lines, and the agent is running', async () => {
    const run = ok(await cli(['agents', 'create', 'cli-box-1', '--wait']));
    const id = /agent ([0-9a-f-]{36}) cli-box-1/.exec(run.stdout)?.[1];
    expect(id, run.stdout).to.be.a('string');
    agentId = id!;
    expect(run.stdout).to.match(/^provision [0-9a-f-]{36} succeeded$/m);
    // Not a terminal: one plain line per change, ending with the final state.
    const progress = run.stderr.trim().split('\n');
    expect(progress.length).to.be.greaterThan(1);
    for (const line of progress) expect(line).to.match(/^provision [0-9a-f]{8} (queued|running|succeeded) \d+%( \S+)?$/);
    expect(progress[progress.length - 1]).to.match(/ succeeded 100%/);

    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('active');
    expect(agent.body.instance.status).to.equal('running');
  });

  it('agents list prints an aligned table, and --json the API’s own JSON', async () => {
    ok(await cli(['agents', 'create', 'cli-box-2']));
    const run = ok(await cli(['agents', 'list']));
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).to.match(/^ID\s+NAME\s+STATUS\s+INSTANCE\s+SERVER IP\s+TAILNET IP\s+CREATED$/);
    expect(lines).to.have.length(3);
    const row = lines.find((l) => l.includes('cli-box-1'))!;
    expect(row.indexOf('cli-box-1')).to.equal(lines[0]!.indexOf('NAME'));
    expect(row.indexOf('active')).to.equal(lines[0]!.indexOf('STATUS'));
    expect(row.indexOf('running')).to.equal(lines[0]!.indexOf('INSTANCE'));

    const json = ok(await cli(['--json', 'agents', 'list']));
    const parsed = JSON.parse(json.stdout);
    const direct = await api.get('/v1/agents');
    expect(parsed.items.map((a: { id: string }) => a.id)).to.deep.equal(direct.body.items.map((a: { id: string }) => a.id));
    expect(parsed.items.find((a: { id: string }) => a.id === agentId)).to.deep.equal(direct.body.items.find((a: { id: string }) => a.id === agentId));
    expect(json.stderr).to.equal('');
  });

  it('agents stop --wait ends with the agent paused; a second stop is a 409 on one line with a non-zero exit', async () => {
    const run = ok(await cli(['agents', 'stop', agentId, '--wait']));
    expect(run.stdout).to.match(/^stop [0-9a-f-]{36} succeeded$/m);
    expect((await api.get(`/v1/agents/${agentId}`)).body.agent.status).to.equal('paused');

    const again = await cli(['agents', 'stop', agentId]);
    expect(again.code).to.equal(1);
    expect(again.stdout).to.equal('');
    expect(again.stderr).to.equal('error 409 state-conflict: No running instance to stop\n');
  });

  it('ops list and ops get show the agent’s operations', async () => {
    const list = ok(await cli(['ops', 'list', '--agent', agentId]));
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).to.match(/^ID\s+TYPE\s+STATUS\s+PROGRESS\s+STEP\s+AGENT\s+REQUESTED$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[1])).to.deep.equal(['stop', 'provision']);
    const stopId = lines[1]!.split(/\s+/)[0]!;

    const get = ok(await cli(['ops', 'get', stopId]));
    expect(get.stdout).to.match(/^type\s+stop$/m);
    expect(get.stdout).to.match(/^status\s+succeeded$/m);
    expect(get.stdout).to.match(/^progress\s+100%$/m);

    const json = ok(await cli(['--json', 'ops', 'list', '--type', 'provision', '--limit', '1']));
    const page = JSON.parse(json.stdout);
    expect(page.items).to.have.length(1);
    expect(page.nextCursor).to.be.a('string');
    const all = ok(await cli(['--json', 'ops', 'list', '--type', 'provision', '--limit', '1', '--all']));
    expect(JSON.parse(all.stdout).items).to.have.length(2);
  });

  it('ops wait exits non-zero for an operation that failed', async () => {
    const create = await api.post('/v1/agents', { name: 'cli-box-3' });
    const opId = create.body.operation.id as string;
    ok(await cli(['ops', 'wait', opId]));
    await suite.db.dataSource.query(`UPDATE operations SET status = 'failed', error = 'simulated failure', failed_step = 'create_server' WHERE id = $1`, [opId]);
    const run = await cli(['ops', 'wait', opId]);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.contain(`error: provision ${opId} failed at create_server: simulated failure`);
  });

  it('tokens create, list and revoke; a read token is refused a stop with 403, a revoked one with 401', async () => {
    const created = ok(await cli(['tokens', 'create', 'cli-reader', '--scope', 'read']));
    const token = /^token\s+(tf_\S+)$/m.exec(created.stdout)?.[1];
    const id = /^id\s+(\S+)$/m.exec(created.stdout)?.[1];
    expect(token, created.stdout).to.be.a('string');
    expect(created.stderr).to.contain('not shown again');

    const list = ok(await cli(['tokens', 'list']));
    expect(list.stdout).to.match(/^ID\s+NAME\s+SCOPE\s+PREFIX\s+CREATED\s+EXPIRES\s+LAST USED\s+REVOKED$/m);
    expect(list.stdout).to.match(new RegExp(`^${id}\\s+cli-reader\\s+read\\s+${token!.slice(0, 10)}`, 'm'));
    expect(list.stdout).not.to.contain(token);

    ok(await cli(['agents', 'list'], { TAILFLEET_TOKEN: token }));
    const refused = await cli(['agents', 'start', agentId], { TAILFLEET_TOKEN: token });
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.equal('error 403 forbidden: The token "cli-reader" has scope read; this needs operate.\n');

    const revoke = ok(await cli(['tokens', 'revoke', id!]));
    expect(revoke.stdout).to.equal(`revoked ${id}\n`);
    const after = await cli(['agents', 'list'], { TAILFLEET_TOKEN: token });
    expect(after.code).to.equal(1);
    expect(after.stderr).to.match(/^error 401 unauthorized: .+\n$/);
  });

  it('reconcile run --wait finishes a pass and reconcile show prints its report', async () => {
    const run = ok(await cli(['reconcile', 'run', '--wait']));
    expect(run.stdout).to.match(/^reconcile [0-9a-f-]{36} succeeded$/m);
    const show = ok(await cli(['reconcile', 'show']));
    expect(show.stdout).to.match(/^trigger\s+manual$/m);
    expect(show.stdout).to.match(/^FINDING\s+COUNT$/m);
  });

  it('webhooks create, list, deliveries and delete', async () => {
    // Nothing listens there: every attempt is refused, and the deliveries say so.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/hook`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const created = ok(await cli(['webhooks', 'create', url, '--events', 'agent.status_changed']));
    const id = /^id\s+(\S+)$/m.exec(created.stdout)?.[1];
    expect(created.stdout).to.match(/^secret\s+whsec_\S+$/m);
    expect(created.stdout).to.match(/^events\s+agent\.status_changed$/m);
    expect(created.stderr).to.contain('not shown again');
    const list = ok(await cli(['webhooks', 'list']));
    expect(list.stdout).to.match(new RegExp(`^${id}\\s+${url.replace(/[.]/g, '\\.')}\\s+agent\\.status_changed\\s+bootstrap`, 'm'));
    expect(list.stdout).not.to.contain('whsec_');

    await api.post('/v1/agents', { name: 'cli-hooked' });
    let deliveries: Run | undefined;
    for (let i = 0; i < 50; i++) {
      deliveries = ok(await cli(['webhooks', 'deliveries', id!]));
      if (/ECONNREFUSED/.test(deliveries.stdout)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(deliveries!.stdout).to.match(/^ID\s+TYPE\s+STATUS\s+ATTEMPTS\s+LAST ANSWER\s+LAST ERROR\s+OCCURRED$/m);
    expect(deliveries!.stdout).to.match(/agent\.status_changed\s+pending\s+1\s+-\s+ECONNREFUSED/);

    expect(ok(await cli(['webhooks', 'delete', id!])).stdout).to.equal(`deleted ${id}\n`);
    const gone = await cli(['webhooks', 'deliveries', id!]);
    expect(gone.code).to.equal(1);
    expect(gone.stderr).to.match(/^error 404 not-found: /);
  });

  it('agents hibernate --wait and fleet cost: the paused agent pays for its snapshot only; agents wake brings it back', async () => {
    const run = ok(await cli(['agents', 'hibernate', agentId, '--wait']));
    expect(run.stdout).to.match(/^hibernate [0-9a-f-]{36} succeeded$/m);
    expect((await api.get(`/v1/agents/${agentId}`)).body.agent.status).to.equal('hibernated');

    const cost = ok(await cli(['fleet', 'cost']));
    expect(cost.stdout).to.match(/^STATUS\s+MONTHLY \(EUR\)$/m);
    expect(cost.stdout).to.match(/^hibernated\s+0\.0\d+$/m);
    expect(cost.stdout).to.match(/^hibernation saves\s+\d+\.\d+ EUR$/m);
    const json = JSON.parse(ok(await cli(['--json', 'fleet', 'cost'])).stdout);
    expect(json).to.deep.equal((await api.get('/v1/fleet/cost')).body);

    const wake = ok(await cli(['agents', 'wake', agentId, '--wait']));
    expect(wake.stdout).to.match(/^wake [0-9a-f-]{36} succeeded$/m);
    const get = ok(await cli(['agents', 'get', agentId]));
    expect(get.stdout).to.match(/^status\s+active$/m);
    expect(get.stdout).to.match(/^monthly cost\s+\d+\.\d+ EUR$/m);
  });

  it('says clearly when there is no token or no server, and exits non-zero', async () => {
    const noToken = await cli(['agents', 'list'], { TAILFLEET_TOKEN: undefined });
    expect(noToken.code).to.equal(2);
    expect(noToken.stderr).to.equal('error: no API token: set TAILFLEET_TOKEN or pass --token <token>\n');

    // --url and --token win over the environment.
    const flags = ok(await cli(['--url', tf.url!, '--token', suite.apiToken, 'agents', 'list'], { TAILFLEET_URL: 'http://127.0.0.1:1', TAILFLEET_TOKEN: 'wrong' }));
    expect(flags.stdout).to.match(/^ID\s+NAME/);

    // A port that was free a moment ago: nothing listens there.
    const closed = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const down = await cli(['agents', 'list'], { TAILFLEET_URL: `http://127.0.0.1:${closed}` });
    expect(down.code).to.equal(1);
    expect(down.stderr).to.equal(`error: cannot reach http://127.0.0.1:${closed}: ECONNREFUSED\n`);
  });

  it('agents create takes the spec flags, agents list filters by label and name, ops cancel and agents reprovision', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tailfleet-cli-'));
    const file = join(dir, 'agent.cfg');
    writeFileSync(file, '#cloud-config\nruncmd:\n  - echo from-file\n');
    const run = ok(
      await cli([
        'agents', 'create', 'cli-spec', '--server-type', 'cpx11', '--location', 'nbg1', '--image', 'debian-12',
        '--ssh-key', 'ops', '--ssh-key', 'backup', '--label', 'customer=acme', '--label', 'tier=gold',
        '--user-data', `@${file}`, '--wait',
      ]),
    );
    const id = /agent ([0-9a-f-]{36}) cli-spec/.exec(run.stdout)![1]!;
    const agent = (await api.get(`/v1/agents/${id}`)).body;
    expect(agent.agent.labels).to.deep.equal({ customer: 'acme', tier: 'gold' });
    expect(agent.agent.spec).to.deep.include({ serverType: 'cpx11', location: 'nbg1', image: 'debian-12', sshKeys: ['ops', 'backup'] });
    expect(agent.agent.spec.userData).to.contain('from-file');

    // Through `npm run cli` the process runs in the package root; a relative @file is the caller's (INIT_CWD).
    const relative = ok(await cli(['--json', 'agents', 'create', 'cli-relative-file', '--user-data', '@agent.cfg'], { INIT_CWD: dir }));
    expect(JSON.parse(relative.stdout).agent.spec.userData).to.contain('from-file');

    const listed = ok(await cli(['--json', 'agents', 'list', '--label', 'customer=acme', '--label', 'tier=gold']));
    expect(JSON.parse(listed.stdout).items.map((a: { id: string }) => a.id)).to.deep.equal([id]);
    const byName = ok(await cli(['--json', 'agents', 'list', '--name', 'cli-box-2', '--status', 'active,draft,provisioning']));
    expect(JSON.parse(byName.stdout).items.map((a: { name: string }) => a.name)).to.deep.equal(['cli-box-2']);

    const done = await cli(['ops', 'cancel', agent.operation?.id ?? (await api.get(`/v1/operations?agentId=${id}`)).body.items[0].id]);
    expect(done.code).to.equal(1);
    expect(done.stderr).to.match(/^error 409 state-conflict: Operation \S+ is succeeded; only a queued operation can be cancelled\n$/);
    const notInError = await cli(['agents', 'reprovision', id]);
    expect(notInError.code).to.equal(1);
    expect(notInError.stderr).to.match(/^error 409 state-conflict: .*only an agent in error/);
  });
  it('agents create --idle --ttl, agents extend, and leases take, list, renew and release (the agent by name)', async () => {
    const created = JSON.parse(ok(await cli(['--json', 'agents', 'create', 'cli-policy', '--idle', 'stop@30m,hibernate@1d', '--ttl', '8h', '--no-reporter'])).stdout);
    expect(created.agent.spec.idle).to.deep.equal([
      { afterSeconds: 1800, action: 'stop' },
      { afterSeconds: 86400, action: 'hibernate' },
    ]);
    expect(created.agent.spec.reporter).to.equal(false);
    expect(new Date(created.agent.expiresAt).getTime() - Date.now()).to.be.within(8 * 3600_000 - 60_000, 8 * 3600_000);
    const bad = await cli(['agents', 'create', 'cli-bad-ladder', '--idle', 'nap@5m']);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/--idle nap@5m: use action@duration/);

    const extended = ok(await cli(['agents', 'extend', 'cli-policy', '--ttl', '2d']));
    expect(extended.stdout).to.match(/^cli-policy expires at \S+\n$/);
    expect((await cli(['agents', 'extend', 'cli-policy'])).code).to.equal(2);

    const lease = JSON.parse(ok(await cli(['--json', 'leases', 'take', 'cli-policy', '--holder', 'nightly-build', '--ttl', '2h'])).stdout);
    expect(lease).to.include({ holder: 'nightly-build', live: true });
    const listed = ok(await cli(['leases', 'list', 'cli-policy']));
    expect(listed.stdout).to.match(new RegExp(`^${lease.id}\\s+nightly-build\\s+\\S+ \\S+Z\\s+live$`, 'm'));
    expect(ok(await cli(['leases', 'renew', 'cli-policy', lease.id, '--ttl', '3h'])).stdout).to.match(new RegExp(`^lease ${lease.id} expires at `));
    expect(ok(await cli(['leases', 'release', 'cli-policy', lease.id])).stdout).to.equal(`released ${lease.id}\n`);
    expect(JSON.parse(ok(await cli(['--json', 'leases', 'list', 'cli-policy'])).stdout).items).to.deep.equal([]);
  });

  it('takes an agent by name wherever it takes an id; an unknown or ambiguous name is a clear error', async () => {
    const created = await api.post('/v1/agents', { name: 'cli-named' });
    expect(created.status).to.equal(201);
    const id = created.body.agent.id as string;
    const get = ok(await cli(['--json', 'agents', 'get', 'cli-named']));
    expect(JSON.parse(get.stdout).agent.id).to.equal(id);
    const ops = ok(await cli(['--json', 'ops', 'list', '--agent', 'cli-named']));
    expect(JSON.parse(ops.stdout).items.map((o: { agentId: string }) => o.agentId)).to.deep.equal([id]);

    const unknown = await cli(['agents', 'stop', 'no-such-agent']);
    expect(unknown.code).to.equal(1);
    expect(unknown.stderr).to.equal('error: no agent is named "no-such-agent" (give its name or id; tailfleet agents list)\n');

    // Names are unique among agents that are not destroyed; two destroyed ones under one name are ambiguous.
    await suite.db.dataSource.query(`UPDATE agents SET status = 'destroyed' WHERE id = $1`, [id]);
    const second = await api.post('/v1/agents', { name: 'cli-named' });
    expect(second.status).to.equal(201);
    const live = ok(await cli(['--json', 'agents', 'get', 'cli-named']));
    expect(JSON.parse(live.stdout).agent.id).to.equal(second.body.agent.id);
    await suite.db.dataSource.query(`UPDATE agents SET status = 'destroyed' WHERE id = $1`, [second.body.agent.id]);
    const ambiguous = await cli(['agents', 'get', 'cli-named']);
    expect(ambiguous.code).to.equal(1);
    expect(ambiguous.stderr).to.match(/^error: the name "cli-named" is ambiguous: .*give the id\n$/);
    expect(ambiguous.stderr).to.contain(id).and.to.contain(second.body.agent.id);
  });

  it('findings list and resolve; console prints the console address', async () => {
    const finding = await new OwnershipFindingRepository({ dataSource: suite.db.dataSource }).recordRefusal(
      { resourceType: 'server', resourceId: '987654', resourceName: 'stray-1', action: 'delete', operation: 'reconcile', matched: ['labels'], missing: ['recorded id'] },
      'refused: no proof',
    );
    const list = ok(await cli(['findings', 'list', '--status', 'open', '--kind', 'server']));
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).to.match(/^ID\s+STATUS\s+RESOURCE\s+ACTION\s+BY\s+AGENT\s+MISSING\s+CREATED$/);
    expect(lines.find((l) => l.startsWith(finding.id))).to.match(/open\s+server 987654 \(stray-1\)\s+delete\s+reconcile/);

    const token = (await api.post('/v1/tokens', { name: 'cli-findings-read', scope: 'read' })).body.token as string;
    const refused = await cli(['findings', 'resolve', finding.id, '--note', 'deleted by hand'], { TAILFLEET_TOKEN: token });
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.match(/^error 403 forbidden: /);

    const resolved = ok(await cli(['findings', 'resolve', finding.id, '--note', 'deleted by hand']));
    expect(resolved.stdout).to.equal(`finding ${finding.id} resolved by bootstrap: deleted by hand\n`);
    const json = JSON.parse(ok(await cli(['--json', 'findings', 'list', '--status', 'resolved'])).stdout);
    expect(json.items.map((f: { id: string }) => f.id)).to.include(finding.id);

    expect(ok(await cli(['console'])).stdout).to.equal(`${new URL('/console', tf.url).toString()}\n`);
    expect(ok(await cli(['--url', 'https://fleet.example.com/base/', 'console'], { TAILFLEET_TOKEN: undefined })).stdout).to.equal(
      'https://fleet.example.com/base/console\n',
    );
  });
  it('pools create, list, show, update, claim --wait and delete', async () => {
    const created = ok(await cli(['pools', 'create', 'cli-pool', '--min-ready', '0', '--standby', 'stopped', '--max-size', '3', '--label', 'tier=warm', '--schedule', '0 8 * * 1-5@Europe/Berlin=2']));
    expect(created.stdout).to.match(/^name\s+cli-pool$/m).and.to.match(/^standby\s+stopped$/m).and.to.match(/^schedule 1\s+0 8 \* \* 1-5 \(Europe\/Berlin\) → 2$/m);
    const list = ok(await cli(['pools', 'list'])).stdout.trimEnd().split('\n');
    expect(list[0]).to.match(/^NAME\s+STANDBY\s+MIN READY\s+MAX\s+READY\s+STARTING\s+CLAIMED\s+SCHEDULES$/);
    expect(list[1]).to.match(/^cli-pool\s+stopped\s+0\s+3\s+0\s+0\s+0\s+1$/);
    const updated = ok(await cli(['pools', 'update', 'cli-pool', '--no-schedules', '--no-max-size', '--standby', 'running']));
    expect(updated.stdout).to.match(/^standby\s+running$/m).and.to.match(/^max size\s+-$/m).and.not.to.match(/schedule 1/);
    const bad = await cli(['pools', 'create', 'cli-pool-2', '--min-ready', '1', '--schedule', 'every morning']);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/--schedule every morning: use/);

    // No standby is ready: the claim provisions one and follows it until it is handed over.
    const claim = ok(await cli(['pools', 'claim', 'cli-pool', '--name', 'cli-claimed', '--label', 'owner=cli', '--lease', '900', '--wait']));
    expect(claim.stdout).to.match(/^agent [0-9a-f-]{36} cli-claimed \(from provision\)$/m).and.to.match(/^claim [0-9a-f-]{36} succeeded$/m);
    const shown = ok(await cli(['pools', 'show', 'cli-pool'])).stdout;
    expect(shown).to.match(/^claimed\s+1$/m);
    const agent = (await api.get('/v1/agents?name=cli-claimed')).body.items[0];
    expect(agent).to.deep.include({ status: 'active', labels: { owner: 'cli' } });

    expect(ok(await cli(['pools', 'delete', 'cli-pool'])).stdout).to.equal('pool cli-pool deleted; 0 standbys being destroyed\n');
    expect((await api.get(`/v1/agents/${agent.id}`)).body.agent.status).to.equal('active');
    const gone = await cli(['pools', 'show', 'cli-pool']);
    expect(gone.code).to.equal(1);
    expect(gone.stderr).to.match(/^error 404 not-found: /);
  });
});
