import { expect } from 'chai';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config';
import { problemsOf, validEnv } from './helpers/config';

const valid = validEnv;

describe('config', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig(valid);
    expect(c.http.port).to.equal(3000);
    expect(c.role).to.equal('all');
    expect(c.tailscale.tailnet).to.equal('-');
    expect(c.tailscale.tags).to.deep.equal(['tag:agent']);
    expect(c.hetzner.apiUrl).to.equal('https://api.hetzner.cloud/v1');
    expect(c.tailscale.apiUrl).to.equal('https://api.tailscale.com/api/v2');
    expect(c.hetzner.shutdownTimeoutSeconds).to.equal(60);
    expect(c.hetzner.sshKeys).to.deep.equal([]);
    // No default login for Bull Board: without both variables only an admin token opens it.
    expect(c.http.board).to.equal(null);
  });

  it('caps open event streams and long polls, in total and per token, and what a slow stream may buffer', () => {
    expect(loadConfig(valid).streams).to.deep.equal({
      eventStreams: { total: 100, perToken: 10 },
      eventStreamMaxBufferBytes: 1_048_576,
      longPolls: { total: 1000, perToken: 100 },
    });
    const set = loadConfig({
      ...valid,
      EVENT_STREAM_MAX_CONNECTIONS: '5',
      EVENT_STREAM_MAX_PER_TOKEN: '2',
      EVENT_STREAM_MAX_BUFFER_BYTES: '65536',
      LONG_POLL_MAX_CONNECTIONS: '7',
      LONG_POLL_MAX_PER_TOKEN: '3',
    }).streams;
    expect(set).to.deep.equal({ eventStreams: { total: 5, perToken: 2 }, eventStreamMaxBufferBytes: 65536, longPolls: { total: 7, perToken: 3 } });
    const problems = problemsOf({ ...valid, EVENT_STREAM_MAX_CONNECTIONS: '0', EVENT_STREAM_MAX_BUFFER_BYTES: '100', LONG_POLL_MAX_PER_TOKEN: 'many' });
    expect(problems.map((p) => p.split(':')[0])).to.include.members(['EVENT_STREAM_MAX_CONNECTIONS', 'EVENT_STREAM_MAX_BUFFER_BYTES', 'LONG_POLL_MAX_PER_TOKEN']);
  });

  it('names every missing variable in one error', () => {
    const problems = problemsOf({});
    for (const name of [
      'DATABASE_URL',
      'REDIS_URL',
      'HETZNER_API_TOKEN',
      'TAILSCALE_OAUTH_CLIENT_ID',
      'TAILSCALE_OAUTH_CLIENT_SECRET',
      'API_TOKEN',
    ]) {
      expect(problems.some((p) => p.startsWith(`${name}: is required`)), name).to.equal(true);
    }
  });

  it('names every malformed variable in one error', () => {
    const problems = problemsOf({
      ...valid,
      DATABASE_URL: 'mysql://x',
      PORT: 'eighty',
      ROLE: 'boss',
      TAILSCALE_TAGS: 'agent',
      SHUTDOWN_TIMEOUT_SECONDS: '-4',
      HETZNER_API_URL: 'not a url',
    });
    const names = problems.map((p) => p.split(':')[0]);
    expect(names).to.have.members([
      'DATABASE_URL',
      'PORT',
      'ROLE',
      'TAILSCALE_TAGS',
      'SHUTDOWN_TIMEOUT_SECONDS',
      'HETZNER_API_URL',
    ]);
  });

  it('turns the Bull Board login on only when both BULL_BOARD_USER and BULL_BOARD_PASSWORD are set', () => {
    const both = loadConfig({ ...valid, BULL_BOARD_USER: 'ops', BULL_BOARD_PASSWORD: 'board-secret-1' });
    expect(both.http.board).to.deep.equal({ user: 'ops', password: 'board-secret-1' });
    expect(loadConfig({ ...valid, BULL_BOARD_USER: 'ops' }).http.board).to.equal(null);
    expect(loadConfig({ ...valid, BULL_BOARD_PASSWORD: 'board-secret-1' }).http.board).to.equal(null);
    // Never the API token as a fallback password.
    expect(JSON.stringify(loadConfig(valid).http.board)).not.to.include(valid.API_TOKEN);
    const names = problemsOf({ ...valid, BULL_BOARD_USER: 'a:b', BULL_BOARD_PASSWORD: 'short', PORT: 'x' }).map((p) => p.split(':')[0]);
    expect(names).to.have.members(['BULL_BOARD_USER', 'BULL_BOARD_PASSWORD', 'PORT']);
  });

  it('parses lists and numbers', () => {
    const c = loadConfig({
      ...valid,
      TAILSCALE_TAGS: 'tag:agent, tag:prod',
      HETZNER_SSH_KEYS: 'laptop,ci',
      ROLE: 'worker',
      PORT: '8080',
    });
    expect(c.tailscale.tags).to.deep.equal(['tag:agent', 'tag:prod']);
    expect(c.hetzner.sshKeys).to.deep.equal(['laptop', 'ci']);
    expect(c.role).to.equal('worker');
    expect(c.http.port).to.equal(8080);
  });

  it('takes FLEET_NAME as a Hetzner label value, default "default", and names the variable when it is not one', () => {
    expect(loadConfig(valid).fleetName).to.equal('default');
    for (const name of ['blue', 'Team_A.prod-2', 'x', 'a'.repeat(63)]) {
      expect(loadConfig({ ...valid, FLEET_NAME: name }).fleetName, name).to.equal(name);
    }
    for (const name of ['-blue', 'blue.', 'has space', 'a'.repeat(64), 'blå']) {
      const problems = problemsOf({ ...valid, FLEET_NAME: name });
      expect(problems, name).to.have.length(1);
      expect(problems[0], name).to.match(/^FLEET_NAME: must be 1-63 characters/);
    }
  });

  it('reads secrets from <VAR>_FILE and refuses both forms at once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tf-config-'));
    const file = join(dir, 'token');
    writeFileSync(file, 'from-file-token\n');
    const { HETZNER_API_TOKEN: _omit, ...rest } = valid;
    expect(loadConfig({ ...rest, HETZNER_API_TOKEN_FILE: file }).hetzner.token).to.equal('from-file-token');
    expect(problemsOf({ ...valid, HETZNER_API_TOKEN_FILE: file })[0]).to.match(/HETZNER_API_TOKEN: set either/);
    expect(problemsOf({ ...rest, HETZNER_API_TOKEN_FILE: join(dir, 'missing') })[0]).to.match(
      /HETZNER_API_TOKEN_FILE: cannot read/,
    );
  });

  it('never echoes a secret value in its error', () => {
    const err = (() => {
      try {
        loadConfig({ ...valid, API_TOKEN: 'short-secret' });
      } catch (e) {
        return e as Error;
      }
      throw new Error('expected failure');
    })();
    expect(err.message).to.match(/API_TOKEN: must be at least 16 characters/);
    expect(err.message).not.to.include('short-secret');
  });

  describe('Hetzner projects and placements', () => {
    const { HETZNER_API_TOKEN: _token, ...withoutToken } = valid;

    it('reads HETZNER_API_TOKEN alone as the single project `default`, placements from location and type, IPv4 on', () => {
      const c = loadConfig({ ...valid, HETZNER_LOCATION: 'nbg1', HETZNER_SERVER_TYPE: 'cx32' });
      expect(c.hetzner.projects).to.deep.equal([{ name: 'default', token: valid.HETZNER_API_TOKEN, maxServers: null }]);
      expect(c.hetzner.placements).to.deep.equal([{ location: 'nbg1', serverType: 'cx32' }]);
      expect(c.hetzner.placementCooldownSeconds).to.equal(600);
      expect(c.hetzner.publicIpv4).to.equal(true);
    });

    it('reads several projects with their limits, placements in order, the cooldown and IPv6-only', () => {
      const c = loadConfig({
        ...withoutToken,
        HETZNER_PROJECTS: 'main=tok-a;maxServers=50, spare=tok-b',
        HETZNER_PLACEMENTS: 'fsn1:cx22,nbg1:cx22,hel1:cx32',
        PLACEMENT_COOLDOWN_SECONDS: '60',
        HETZNER_PUBLIC_IPV4: 'false',
      });
      expect(c.hetzner.projects).to.deep.equal([
        { name: 'main', token: 'tok-a', maxServers: 50 },
        { name: 'spare', token: 'tok-b', maxServers: null },
      ]);
      expect(c.hetzner.token).to.equal('tok-a');
      expect(c.hetzner.placements).to.deep.equal([
        { location: 'fsn1', serverType: 'cx22' },
        { location: 'nbg1', serverType: 'cx22' },
        { location: 'hel1', serverType: 'cx32' },
      ]);
      expect(c.hetzner.placementCooldownSeconds).to.equal(60);
      expect(c.hetzner.publicIpv4).to.equal(false);
    });

    it('reads HETZNER_PROJECTS from a file', () => {
      const file = join(mkdtempSync(join(tmpdir(), 'tailfleet-')), 'projects');
      writeFileSync(file, 'a=t1,b=t2\n');
      expect(loadConfig({ ...withoutToken, HETZNER_PROJECTS_FILE: file }).hetzner.projects.map((p) => p.name)).to.deep.equal(['a', 'b']);
    });

    it('names every bad variable, never a token', () => {
      const problems = problemsOf({
        ...valid,
        HETZNER_PROJECTS: 'main=secret-token;maxServers=lots',
        HETZNER_PLACEMENTS: 'fsn1-cx22',
        PLACEMENT_COOLDOWN_SECONDS: '-1',
        HETZNER_PUBLIC_IPV4: 'maybe',
      });
      const names = problems.map((p) => p.split(':')[0]);
      expect(names).to.include.members(['HETZNER_PROJECTS', 'HETZNER_PLACEMENTS', 'PLACEMENT_COOLDOWN_SECONDS', 'HETZNER_PUBLIC_IPV4']);
      expect(problems.join('\n')).to.not.include('secret-token');
      expect(problemsOf({ ...valid, HETZNER_PROJECTS: 'a=t' }).some((p) => p.startsWith('HETZNER_PROJECTS: set either'))).to.equal(true);
      for (const bad of ['a=t,a=u', 'noequals', 'UPPER=t', 'a=t;color=red']) {
        expect(problemsOf({ ...withoutToken, HETZNER_PROJECTS: bad }).some((p) => p.startsWith('HETZNER_PROJECTS:')), bad).to.equal(true);
      }
      expect(problemsOf(withoutToken).some((p) => p.startsWith('HETZNER_API_TOKEN: is required'))).to.equal(true);
    });
  });
});
