import { expect } from 'chai';
import { startSimulator, type RunningSimulator, type SimTimingsInput } from '../../src/simulator';
import { buildUserData, mergeUserData } from '../../src/workflows/cloud-init';
import { waitFor } from '../helpers/wait';

// The simulator reads a server's user data by cloud-init's rules: a device enrolls only when the
// `tailscale up` cloud-init would run first is reached, so a provision whose join a real machine
// would never run never enrolls here either.

const FAST: SimTimingsInput = { actionDurationMs: 20, bootMs: 0, enrollDelayMs: 10, rateLimit: { limit: 10_000, refillPerSecond: 1000 } };
const TOKEN = 'user-data-token';

const mime = (...parts: string[]) =>
  ['Content-Type: multipart/mixed; boundary="b"', 'MIME-Version: 1.0', '', ...parts.flatMap((p) => ['--b', p]), '--b--', ''].join('\n');
const scriptPart = (name: string, body: string) =>
  `Content-Type: text/x-shellscript\nContent-Disposition: attachment; filename="${name}"\n\n${body}`;
const cloudConfigPart = (body: string, mergeType?: string) =>
  `Content-Type: text/cloud-config\n${mergeType ? `Merge-Type: ${mergeType}\n` : ''}\n${body}`;

describe('cloud simulator: enrollment by cloud-init rules', () => {
  let sim: RunningSimulator;
  let accessToken: string;

  before(async () => {
    sim = await startSimulator({
      port: 0,
      timings: FAST,
      seed: 7,
      credentials: { hetznerTokens: [TOKEN], tailscaleClients: [{ clientId: 'ud-client', clientSecret: 'ud-secret' }] },
    });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(async () => {
    sim.control.reset(FAST);
    const res = await fetch(`${sim.tailscaleUrl}/oauth/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'ud-client', client_secret: 'ud-secret' }),
    });
    accessToken = ((await res.json()) as { access_token: string }).access_token;
  });

  async function authKey(): Promise<string> {
    const res = await fetch(`${sim.tailscaleUrl}/tailnet/-/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        capabilities: { devices: { create: { reusable: false, ephemeral: false, preauthorized: true, tags: ['tag:agent'] } } },
        expirySeconds: 600,
      }),
    });
    expect(res.status).to.equal(200);
    return ((await res.json()) as { key: string }).key;
  }

  /** Creates a server with this user data and answers its enrollment once it is settled. */
  async function boot(name: string, userData: string) {
    const res = await fetch(`${sim.hetznerUrl}/servers`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name, server_type: 'cx22', image: 'ubuntu-24.04', location: 'fsn1', user_data: userData }),
    });
    expect(res.status, await res.clone().text()).to.equal(201);
    const id = ((await res.json()) as { server: { id: number } }).server.id;
    return waitFor(`${name} running, its enrollment settled`, () => {
      const server = sim.control.state().servers.find((s) => s.id === id);
      const e = server?._sim.enrollment;
      return server?.status === 'running' && e && e.state !== 'waiting' && e.state !== 'scheduled' ? e : undefined;
    });
  }

  const join = (key: string, hostname: string) => buildUserData({ authKey: key, hostname });

  it("enrolls from tailfleet's user data whatever the agent brings beside it", async () => {
    const owns = {
      'runcmd-box': '#cloud-config\nruncmd:\n  - echo hello > /tmp/hello\n',
      'sleeper-box': '#!/bin/sh\nsleep infinity\n',
      'mime-box': mime(scriptPart('00-first.sh', '#!/bin/sh\nwhile true; do sleep 1; done\n'), cloudConfigPart('#cloud-config\nruncmd: [sleep infinity]')),
    };
    for (const [name, own] of Object.entries(owns)) {
      const e = await boot(name, mergeUserData(join(await authKey(), name), own));
      expect(e, name).to.deep.include({ state: 'enrolled', hostname: name });
    }
  });

  it("never enrolls when an agent's cloud-config runcmd replaces a join kept in runcmd", async () => {
    const key = await authKey();
    const joinAsCloudConfig = `#cloud-config\nruncmd:\n  - 'tailscale up --auth-key=${key} --hostname=replaced'\n`;
    const replaced = await boot('replaced', mime(cloudConfigPart(joinAsCloudConfig), cloudConfigPart('#cloud-config\nruncmd:\n  - echo hello\n')));
    expect(replaced.state).to.equal('none');
    expect(sim.control.state().devices).to.deep.equal([]);

    // Lists appended, as the agent's part asks: the join stays and runs.
    const appended = await boot(
      'appended',
      mime(cloudConfigPart(joinAsCloudConfig.replace('replaced', 'appended')), cloudConfigPart('#cloud-config\nruncmd:\n  - echo hello\n', 'dict(recurse_array)+list(append)+str()')),
    );
    expect(appended).to.deep.include({ state: 'enrolled', hostname: 'appended' });
  });

  it('never enrolls when something that never exits runs before the join', async () => {
    const key = await authKey();
    const cases: [string, string, string][] = [
      ['sorted-first', mime(scriptPart('(a)', '#!/bin/sh\nsleep infinity\n'), scriptPart('(tailfleet-join)', join(key, 'sorted-first'))), 'scripts-user (a)'],
      ['boothook', mime(scriptPart('(tailfleet-join)', join(key, 'boothook')), 'Content-Type: text/cloud-boothook\n\n#cloud-boothook\n#!/bin/sh\ntail -f /dev/null\n'), 'boothook part-002'],
      ['bootcmd', mime(scriptPart('(tailfleet-join)', join(key, 'bootcmd')), cloudConfigPart('#cloud-config\nbootcmd:\n  - sleep infinity\n')), 'bootcmd'],
      ['runcmd-first', `#cloud-config\nruncmd:\n  - sleep infinity\n  - tailscale up --auth-key=${key} --hostname=runcmd-first\n`, 'scripts-user runcmd'],
    ];
    for (const [name, userData, blocker] of cases) {
      const e = await boot(name, userData);
      expect(e, name).to.deep.include({ state: 'none', error: `cloud-init never gets past ${blocker}` });
    }
    // Once nothing blocks it, the same key still joins: none of the above used it.
    const free = await boot('free', mime(scriptPart('(tailfleet-join)', join(key, 'free')), scriptPart('zz', '#!/bin/sh\nsleep infinity\n')));
    expect(free).to.deep.include({ state: 'enrolled', hostname: 'free' });
  });

  it('never enrolls when the final modules leave out scripts-user, or the join is no document cloud-init runs', async () => {
    const key = await authKey();
    const dropped = await boot('dropped', mime(scriptPart('(tailfleet-join)', join(key, 'dropped')), cloudConfigPart('#cloud-config\ncloud_final_modules: [final-message]\n')));
    expect(dropped.state).to.equal('none');
    const plain = await boot('plain', `tailscale up --auth-key=${key} --hostname=plain\n`);
    expect(plain.state).to.equal('none');
    const encoded = await boot('encoded', Buffer.from(join(key, 'encoded')).toString('base64'));
    expect(encoded).to.deep.include({ state: 'enrolled', hostname: 'encoded' });
  });
});
