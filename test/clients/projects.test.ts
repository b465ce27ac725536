import { expect } from 'chai';
import IORedis from 'ioredis';
import { randomBytes } from 'node:crypto';
import { CloudApiError } from '../../src/clients/errors';
import { HetznerClient } from '../../src/clients/hetzner/hetzner.client';
import { HetznerProjects, UnknownProjectError } from '../../src/clients/hetzner/projects';
import { deleteRedisPrefix } from '../../src/lib/redis-keys';
import { MemoryCapacityStore, RedisCapacityStore, refusalKind } from '../../src/workflows/placement';
import { waitFor } from '../helpers/wait';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

// Which project a create goes to, which refusals move it on, and the cooldowns the workers share.

const client = (token: string) => new HetznerClient({ baseUrl: 'http://127.0.0.1:9/never-called', token });
const hetznerError = (status: number, code: string, message = 'refused') =>
  new CloudApiError({ api: 'hetzner', status, code, message, retryable: false, method: 'POST', path: '/servers' });

describe('Hetzner projects: choice and scope', () => {
  const projects = () =>
    new HetznerProjects([
      { name: 'a', client: client('ta'), maxServers: null },
      { name: 'b', client: client('tb'), maxServers: null },
      { name: 'c', client: client('tc'), maxServers: 5 },
    ]);

  it('puts the emptiest project first, spreads concurrent choices, and puts full ones last', () => {
    const p = projects();
    const load = (a: number, b: number, c: number, full: string[] = []) =>
      new Map(Object.entries({ a, b, c }).map(([name, servers]) => [name, { servers, full: full.includes(name) }]));
    // Without a configured limit the fewest servers come first; c, with a limit of 5, has less room than either.
    expect(p.rank(load(3, 1, 0)).map((x) => x.name)).to.deep.equal(['b', 'a', 'c']);
    // c has a configured limit of 5: at 5 servers it has no room and goes last; a full mark does the same.
    expect(p.rank(load(0, 0, 5)).map((x) => x.name)).to.deep.equal(['a', 'b', 'c']);
    expect(p.rank(load(0, 9, 0, ['a'])).map((x) => x.name)).to.deep.equal(['b', 'c', 'a']);
    // Creates in flight count as servers: two choices at once go to different projects.
    const release = p.hold('a');
    expect(p.rank(load(0, 0, 0))[0]!.name).to.equal('b');
    release();
    release();
    expect(p.rank(load(0, 0, 0))[0]!.name).to.equal('a');
  });

  it('sends each call to the scope’s project, the first outside any, and refuses an unknown project', async () => {
    const p = projects();
    expect(p.current().name).to.equal('a');
    await p.within('b', async () => {
      expect(p.current().name).to.equal('b');
      await p.within(undefined, async () => {
        p.use('c');
        expect(p.current().name).to.equal('c');
      });
      expect(p.current().name, 'a nested scope moves only itself').to.equal('b');
      expect(p.client.rateLimiter).to.equal(p.get('b').client.rateLimiter);
    });
    expect(p.current().name).to.equal('a');
    expect(() => p.get('zz')).to.throw(UnknownProjectError, /HETZNER_PROJECTS has a, b, c/);
    expect(() => p.use('b')).to.throw(/outside a project scope/);
  });
});

describe('placement refusals', () => {
  it('moves on from a place for 412, placement_error and a disabled place; from a project for 403 resource_limit_exceeded', () => {
    expect(refusalKind(hetznerError(412, 'resource_unavailable'))).to.equal('place');
    expect(refusalKind(hetznerError(422, 'placement_error'))).to.equal('place');
    expect(refusalKind(hetznerError(422, 'invalid_input', 'unsupported location for server type'))).to.equal('place');
    expect(refusalKind(hetznerError(403, 'resource_limit_exceeded', 'project limit exceeded'))).to.equal('project');
    for (const other of [hetznerError(422, 'invalid_input', 'image not found'), hetznerError(403, 'forbidden'), hetznerError(503, 'unavailable'), new Error('x')]) {
      expect(refusalKind(other), String(other)).to.equal(null);
    }
  });
});

describe('capacity cooldowns', () => {
  it('in memory: a refused place and a full project until their cooldown ends', async () => {
    let now = 1000;
    const store = new MemoryCapacityStore(() => now);
    await store.refusePlace({ location: 'fsn1', serverType: 'cx22' }, 500);
    await store.markProjectFull('a', 500);
    const places = [{ location: 'fsn1', serverType: 'cx22' }, { location: 'nbg1', serverType: 'cx22' }];
    expect(await store.refused(places, ['a', 'b'])).to.deep.equal({ places: new Set(['fsn1:cx22']), projects: new Set(['a']) });
    now += 501;
    expect(await store.refused(places, ['a', 'b'])).to.deep.equal({ places: new Set(), projects: new Set() });
  });

  it('in Redis: shared by every store on the prefix, gone when the cooldown ends', async () => {
    const prefix = `tf-test-capacity-${randomBytes(4).toString('hex')}`;
    const redis = new IORedis(REDIS_URL);
    try {
      const one = new RedisCapacityStore({ redis, prefix });
      const other = new RedisCapacityStore({ redis, prefix });
      await one.refusePlace({ location: 'hel1', serverType: 'cx32' }, 150);
      await one.markProjectFull('main', 60_000);
      await one.noteBudget('main', { limit: 3600, remaining: 12, at: '2026-01-01T00:00:00.000Z' });
      const seen = await other.refused([{ location: 'hel1', serverType: 'cx32' }], ['main', 'spare']);
      expect(seen).to.deep.equal({ places: new Set(['hel1:cx32']), projects: new Set(['main']) });
      expect((await other.budgets(['main', 'spare'])).get('main')).to.deep.equal({ limit: 3600, remaining: 12, at: '2026-01-01T00:00:00.000Z' });
      await waitFor('the place cooldown to end', async () => ((await other.refused([{ location: 'hel1', serverType: 'cx32' }], [])).places.size === 0 ? true : undefined));
    } finally {
      redis.disconnect();
      await deleteRedisPrefix(REDIS_URL, prefix);
    }
  });
});
