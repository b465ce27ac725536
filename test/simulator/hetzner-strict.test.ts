import { expect } from 'chai';
import { SIM_DEFAULT_CREDENTIALS, startSimulator, type RunningSimulator } from '../../src/simulator';
import { SSH_KEY_FIXTURES } from '../helpers/ssh-keys';
import { waitFor } from '../helpers/wait';

// The simulator refuses what Hetzner refuses and accepts what Hetzner accepts, so a typo in
// HETZNER_IMAGE or HETZNER_SSH_KEYS fails a test the way it would fail in production.

interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

describe('cloud simulator: as strict as Hetzner', function () {
  let sim: RunningSimulator;

  async function hz(method: string, path: string, body?: unknown): Promise<Reply> {
    const res = await fetch(sim.hetznerUrl + path, {
      method,
      headers: { authorization: `Bearer ${SIM_DEFAULT_CREDENTIALS.hetznerToken}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
  }

  const serverBody = (name: string, extra: Record<string, unknown> = {}) => ({
    name,
    server_type: 'cx22',
    image: 'ubuntu-24.04',
    location: 'fsn1',
    ...extra,
  });

  async function createServer(name: string, extra: Record<string, unknown> = {}) {
    const res = await hz('POST', '/servers', serverBody(name, extra));
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    return res.body.server;
  }

  async function systemImage(name: string, architecture: 'x86' | 'arm') {
    const res = await hz('GET', `/images?type=system&name=${name}&architecture=${architecture}`);
    expect(res.body.images).to.have.length(1);
    return res.body.images[0];
  }

  before(async () => {
    sim = await startSimulator({
      timings: { actionDurationMs: 20, imageMsPerGb: 0, bootMs: 0, enrollDelayMs: 0, shutdownMs: 20, ignoreAcpiRate: 0 },
      sshKeys: ['seeded', { name: 'seeded-rsa', public_key: SSH_KEY_FIXTURES.rsa.publicKey, labels: { team: 'ops' } }],
    });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(() => sim.control.reset());

  describe('POST /servers references', () => {
    it('refuses an unknown server type, location, data center, image or SSH key with invalid_input, creating nothing', async () => {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ server_type: 'cx99' }, 'server type not found'],
        [{ server_type: 999_999 }, 'server type not found'],
        [{ location: 'mars1' }, 'location not found'],
        [{ location: '77' }, 'location not found'],
        [{ location: undefined, datacenter: 'fsn1-dc99' }, 'datacenter not found'],
        [{ image: 'ubuntu-2404' }, 'image not found'],
        [{ image: '999999999' }, 'image not found'],
        [{ image: 'ubuntu-24.04-typo' }, 'image not found'],
        [{ ssh_keys: ['laptop'] }, "SSH key 'laptop' not found"],
        [{ ssh_keys: ['seeded', 424242] }, "SSH key '424242' not found"],
        [{ server_type: 'cax11', location: 'ash' }, 'unsupported location for server type'],
      ];
      for (const [extra, message] of cases) {
        const res = await hz('POST', '/servers', serverBody('typo-box', extra));
        expect(res.status, JSON.stringify(extra)).to.equal(422);
        expect(res.body, JSON.stringify(extra)).to.deep.equal({ error: { code: 'invalid_input', message, details: {} } });
      }
      const listed = await hz('GET', '/servers');
      expect(listed.body.servers).to.deep.equal([]);
      expect(sim.control.state().servers).to.deep.equal([]);
      expect(sim.control.state().actions).to.deep.equal([]);
      // The name was never taken.
      expect((await createServer('typo-box')).name).to.equal('typo-box');
    });

    it('lists every malformed field before looking anything up', async () => {
      const res = await hz('POST', '/servers', { name: 'x', server_type: '', image: { name: 'ubuntu-24.04' }, ssh_keys: 'ops' });
      expect(res.status).to.equal(422);
      expect(res.body.error.code).to.equal('invalid_input');
      expect(res.body.error.details.fields.map((f: { name: string }) => f.name)).to.deep.equal(['server_type', 'image', 'ssh_keys']);
    });

    it('takes ids wherever the API takes an id or a name', async () => {
      const x86 = await systemImage('ubuntu-24.04', 'x86');
      const seeded = (await hz('GET', '/ssh_keys?name=seeded')).body.ssh_keys[0];
      const types = (await hz('GET', '/server_types')).body.server_types as Array<{ id: number; name: string }>;
      const cpx11 = types.find((t) => t.name === 'cpx11')!;
      const locations = (await hz('GET', '/locations')).body.locations as Array<{ id: number; name: string }>;
      const hel1 = locations.find((l) => l.name === 'hel1')!;

      const byIds = await createServer('by-ids', {
        server_type: cpx11.id,
        location: String(hel1.id),
        image: x86.id,
        ssh_keys: [seeded.id, String(seeded.id), 'seeded-rsa'],
      });
      expect(byIds.server_type.name).to.equal('cpx11');
      expect(byIds.location.name).to.equal('hel1');
      expect(byIds.datacenter.location.name).to.equal('hel1');
      expect(byIds.image).to.deep.equal(x86);
      expect(sim.control.state().servers[0]!._sim.sshKeys).to.deep.equal([String(seeded.id), String(seeded.id), 'seeded-rsa']);

      const typeIdAsString = await createServer('type-id-string', { server_type: String(cpx11.id), image: String(x86.id) });
      expect(typeIdAsString.server_type.name).to.equal('cpx11');
      expect(typeIdAsString.image.id).to.equal(x86.id);

      // The deprecated `datacenter`, by name and by the id a server shows.
      const byDcName = await createServer('dc-name', { location: undefined, datacenter: 'nbg1-dc3' });
      expect(byDcName.datacenter.name).to.equal('nbg1-dc3');
      const byDcId = await createServer('dc-id', { location: undefined, datacenter: byDcName.datacenter.id });
      expect(byDcId.location.name).to.equal('nbg1');
    });

    it('records a system image given by id as that image, and picks the architecture a name stands for', async () => {
      const x86 = await systemImage('debian-12', 'x86');
      const arm = await systemImage('debian-12', 'arm');
      expect(arm.id).to.not.equal(x86.id);
      expect(arm).to.include({ type: 'system', name: 'debian-12', os_flavor: 'debian', os_version: '12' });

      const byId = await createServer('debian-by-id', { image: x86.id });
      expect(byId.image).to.deep.equal(x86);
      expect((await hz('GET', `/servers/${byId.id}`)).body.server.image).to.deep.equal(x86);
      expect((await hz('GET', `/images/${x86.id}`)).body.image).to.deep.equal(x86);

      // The same name on an Arm type is the Arm image; an x86 image's id on an Arm type is refused.
      const onArm = await createServer('debian-on-arm', { server_type: 'cax11', image: 'debian-12' });
      expect(onArm.image).to.deep.equal(arm);
      const wrongArch = await hz('POST', '/servers', serverBody('wrong-arch', { server_type: 'cax11', image: x86.id }));
      expect(wrongArch.status).to.equal(422);
      expect(wrongArch.body.error).to.deep.equal({
        code: 'invalid_input',
        message: 'image architecture x86 does not match server type architecture arm',
        details: {},
      });
    });

    it('honours public_net.enable_ipv4 and enable_ipv6, and refuses a server with no way in', async () => {
      const v6only = await createServer('v6-only', { public_net: { enable_ipv4: false } });
      expect(v6only.public_net.ipv4).to.equal(null);
      expect(v6only.public_net.ipv6.ip).to.match(/^2a01:4f8:/);
      expect((await hz('GET', `/servers/${v6only.id}`)).body.server.public_net.ipv4).to.equal(null);

      const v4only = await createServer('v4-only', { public_net: { enable_ipv6: false } });
      expect(v4only.public_net.ipv6).to.equal(null);
      expect(v4only.public_net.ipv4.ip).to.match(/^\d+\.\d+\.\d+\.\d+$/);

      const neither = await hz('POST', '/servers', serverBody('unreachable', { public_net: { enable_ipv4: false, enable_ipv6: false } }));
      expect(neither.status).to.equal(422);
      expect(neither.body.error.details.fields).to.deep.equal([
        { name: 'public_net', messages: ['a server needs a public IPv4, a public IPv6 or a network'] },
      ]);
      const notBoolean = await hz('POST', '/servers', serverBody('odd', { public_net: { enable_ipv4: 'no' } }));
      expect(notBoolean.status).to.equal(422);
      expect(notBoolean.body.error.details.fields[0].name).to.equal('public_net.enable_ipv4');
      expect((await hz('GET', '/servers')).body.servers.map((s: { name: string }) => s.name)).to.deep.equal(['v6-only', 'v4-only']);
    });
  });

  describe('/ssh_keys', () => {
    it('creates a key with the fingerprint ssh-keygen gives it, and reads, lists, renames and deletes it', async () => {
      const created = await hz('POST', '/ssh_keys', { name: 'laptop', public_key: SSH_KEY_FIXTURES.ed25519.publicKey, labels: { team: 'dev' } });
      expect(created.status, JSON.stringify(created.body)).to.equal(201);
      const key = created.body.ssh_key;
      expect(key).to.deep.include({
        name: 'laptop',
        fingerprint: SSH_KEY_FIXTURES.ed25519.fingerprint,
        public_key: SSH_KEY_FIXTURES.ed25519.publicKey,
        labels: { team: 'dev' },
      });
      expect(Object.keys(key).sort()).to.deep.equal(['created', 'fingerprint', 'id', 'labels', 'name', 'public_key']);
      expect(new Date(key.created).toISOString()).to.equal(key.created);
      const seededRsa = (await hz('GET', '/ssh_keys?name=seeded-rsa')).body.ssh_keys[0];
      expect(seededRsa.fingerprint).to.equal(SSH_KEY_FIXTURES.rsa.fingerprint);

      expect((await hz('GET', `/ssh_keys/${key.id}`)).body.ssh_key).to.deep.equal(key);
      const byFingerprint = await hz('GET', `/ssh_keys?fingerprint=${SSH_KEY_FIXTURES.ed25519.fingerprint}`);
      expect(byFingerprint.body.ssh_keys.map((k: { id: number }) => k.id)).to.deep.equal([key.id]);

      const renamed = await hz('PUT', `/ssh_keys/${key.id}`, { name: 'laptop-2', labels: { team: 'ops', env: 'prod' } });
      expect(renamed.status).to.equal(200);
      expect(renamed.body.ssh_key).to.deep.equal({ ...key, name: 'laptop-2', labels: { team: 'ops', env: 'prod' } });
      expect((await hz('GET', '/ssh_keys?name=laptop')).body.ssh_keys).to.deep.equal([]);

      // A server may name it by its new name; the old one is gone.
      await createServer('with-key', { ssh_keys: ['laptop-2'] });
      const oldName = await hz('POST', '/servers', serverBody('old-key-name', { ssh_keys: ['laptop'] }));
      expect(oldName.body.error.message).to.equal("SSH key 'laptop' not found");

      const deleted = await hz('DELETE', `/ssh_keys/${key.id}`);
      expect(deleted.status).to.equal(204);
      expect(deleted.body).to.equal(undefined);
      const gone = await hz('GET', `/ssh_keys/${key.id}`);
      expect(gone.status).to.equal(404);
      expect(gone.body).to.deep.equal({ error: { code: 'not_found', message: `SSH key with ID '${key.id}' not found`, details: null } });
      expect((await hz('DELETE', `/ssh_keys/${key.id}`)).status).to.equal(404);
      const afterDelete = await hz('POST', '/servers', serverBody('deleted-key', { ssh_keys: [key.id] }));
      expect(afterDelete.status).to.equal(422);
    });

    it('answers uniqueness_error for a second key with the same name or the same public key', async () => {
      const first = await hz('POST', '/ssh_keys', { name: 'one', public_key: SSH_KEY_FIXTURES.ed25519.publicKey });
      expect(first.status).to.equal(201);
      const sameName = await hz('POST', '/ssh_keys', { name: 'one', public_key: SSH_KEY_FIXTURES.ed25519b.publicKey });
      expect(sameName.status).to.equal(409);
      expect(sameName.body.error).to.deep.equal({
        code: 'uniqueness_error',
        message: 'SSH key with the same name already exists',
        details: { fields: [{ name: 'name' }] },
      });
      // The same key under another comment is the same key: the fingerprint is of the key alone.
      const sameKey = await hz('POST', '/ssh_keys', {
        name: 'two',
        public_key: SSH_KEY_FIXTURES.ed25519.publicKey.replace('ops@example', 'other-comment'),
      });
      expect(sameKey.status).to.equal(409);
      expect(sameKey.body.error).to.deep.equal({
        code: 'uniqueness_error',
        message: 'SSH key with the same fingerprint already exists',
        details: { fields: [{ name: 'public_key' }] },
      });
      const second = await hz('POST', '/ssh_keys', { name: 'two', public_key: SSH_KEY_FIXTURES.ed25519b.publicKey });
      expect(second.status).to.equal(201);
      const renameOntoFirst = await hz('PUT', `/ssh_keys/${second.body.ssh_key.id}`, { name: 'one' });
      expect(renameOntoFirst.status).to.equal(409);
      expect(renameOntoFirst.body.error.code).to.equal('uniqueness_error');
      expect((await hz('GET', `/ssh_keys/${second.body.ssh_key.id}`)).body.ssh_key.name).to.equal('two');
    });

    it('refuses a malformed key, name or labels with invalid_input naming the field, storing nothing', async () => {
      const before = (await hz('GET', '/ssh_keys')).body.ssh_keys.length;
      const cases: Array<[Record<string, unknown>, string, RegExp]> = [
        [{ public_key: SSH_KEY_FIXTURES.ed25519.publicKey }, 'name', /Missing data/],
        [{ name: 'k' }, 'public_key', /Missing data/],
        [{ name: 'k', public_key: 'ssh-foo AAAA k@x' }, 'public_key', /^SSH key type is invalid \(supported types: ssh-ed25519, ssh-rsa/],
        [{ name: 'k', public_key: 'ssh-ed25519 not-base64!' }, 'public_key', /^SSH key is invalid$/],
        // A blob of another type than the line says.
        [{ name: 'k', public_key: SSH_KEY_FIXTURES.rsa.publicKey.replace('ssh-rsa', 'ssh-ed25519') }, 'public_key', /^SSH key is invalid$/],
        [{ name: 'k', public_key: SSH_KEY_FIXTURES.ed25519.publicKey, labels: { 'hetzner.cloud/x': 'y' } }, 'labels', /reserved/],
      ];
      for (const [body, field, message] of cases) {
        const res = await hz('POST', '/ssh_keys', body);
        expect(res.status, JSON.stringify(body)).to.equal(422);
        expect(res.body.error.code).to.equal('invalid_input');
        expect(res.body.error.details.fields[0].name, JSON.stringify(body)).to.equal(field);
        expect(res.body.error.details.fields[0].messages[0]).to.match(message);
      }
      expect((await hz('GET', '/ssh_keys')).body.ssh_keys.length).to.equal(before);
      const seededId = (await hz('GET', '/ssh_keys?name=seeded')).body.ssh_keys[0].id;
      const badLabels = await hz('PUT', `/ssh_keys/${seededId}`, { labels: { ok: 'white space' } });
      expect(badLabels.status).to.equal(422);
      expect((await hz('GET', `/ssh_keys/${seededId}`)).body.ssh_key.labels).to.deep.equal({});
    });

    it('filters by label_selector and pages like the other listings', async () => {
      await hz('POST', '/ssh_keys', { name: 'a', public_key: SSH_KEY_FIXTURES.ed25519.publicKey, labels: { team: 'ops', env: 'prod' } });
      await hz('POST', '/ssh_keys', { name: 'b', public_key: SSH_KEY_FIXTURES.ed25519b.publicKey, labels: { team: 'dev' } });
      const names = async (query: string) => (await hz('GET', `/ssh_keys?${query}`)).body.ssh_keys.map((k: { name: string }) => k.name);
      expect(await names('label_selector=team=ops')).to.deep.equal(['seeded-rsa', 'a']);
      expect(await names('label_selector=team=ops,env=prod')).to.deep.equal(['a']);
      expect(await names('label_selector=!team')).to.deep.equal(['seeded']);
      expect(await names('sort=name:desc')).to.deep.equal(['seeded-rsa', 'seeded', 'b', 'a']);
      const broken = await hz('GET', `/ssh_keys?label_selector=${encodeURIComponent('team in (ops')}`);
      expect(broken.status).to.equal(400);
      expect(broken.body.error.code).to.equal('invalid_input');

      const page = await hz('GET', '/ssh_keys?per_page=3&page=2');
      expect(page.body.ssh_keys.map((k: { name: string }) => k.name)).to.deep.equal(['b']);
      expect(page.body.meta.pagination).to.deep.equal({ page: 2, per_page: 3, previous_page: 1, next_page: null, last_page: 2, total_entries: 4 });
      expect(page.headers.get('link')).to.contain('rel="prev"');
    });

    it('keeps seeded keys, with their ids, across a reset, and drops the rest', async () => {
      const seededBefore = (await hz('GET', '/ssh_keys')).body.ssh_keys;
      expect(seededBefore.map((k: { name: string }) => k.name)).to.deep.equal(['seeded', 'seeded-rsa']);
      expect(seededBefore[1].labels).to.deep.equal({ team: 'ops' });
      await hz('PUT', `/ssh_keys/${seededBefore[0].id}`, { name: 'renamed' });
      await hz('POST', '/ssh_keys', { name: 'temporary', public_key: SSH_KEY_FIXTURES.ed25519.publicKey });
      sim.control.reset();
      expect((await hz('GET', '/ssh_keys')).body.ssh_keys).to.deep.equal(seededBefore);
      expect(sim.control.state().sshKeys).to.deep.equal(seededBefore);
    });
  });

  describe('PUT /servers/{id} and PUT /images/{id}', () => {
    it('renames a server and replaces its labels, refusing a taken name or bad labels without changing anything', async () => {
      const a = await createServer('alpha', { labels: { role: 'web' } });
      await createServer('beta');
      const renamed = await hz('PUT', `/servers/${a.id}`, { name: 'alpha-2', labels: { role: 'db', 'example.com/tier': 'gold' } });
      expect(renamed.status).to.equal(200);
      expect(renamed.body.server).to.include({ id: a.id, name: 'alpha-2' });
      expect(renamed.body.server.labels).to.deep.equal({ role: 'db', 'example.com/tier': 'gold' });
      expect((await hz('GET', '/servers?name=alpha-2')).body.servers.map((s: { id: number }) => s.id)).to.deep.equal([a.id]);
      expect((await hz('GET', '/servers?name=alpha')).body.servers).to.deep.equal([]);
      expect((await hz('GET', '/servers?label_selector=role=db')).body.servers.map((s: { id: number }) => s.id)).to.deep.equal([a.id]);
      // The old name is free again.
      await createServer('alpha');

      const taken = await hz('PUT', `/servers/${a.id}`, { name: 'beta' });
      expect(taken.status).to.equal(409);
      expect(taken.body.error.code).to.equal('uniqueness_error');
      const bad = await hz('PUT', `/servers/${a.id}`, { name: 'not a hostname', labels: { 'hetzner.cloud/x': '1' } });
      expect(bad.status).to.equal(422);
      expect(bad.body.error.details.fields.map((f: { name: string }) => f.name)).to.deep.equal(['name', 'labels']);
      const notJson = await hz('PUT', `/servers/${a.id}`, ['name']);
      expect(notJson.status).to.equal(400);
      expect(notJson.body.error.code).to.equal('json_error');
      const after = (await hz('GET', `/servers/${a.id}`)).body.server;
      expect(after.name).to.equal('alpha-2');
      expect(after.labels).to.deep.equal({ role: 'db', 'example.com/tier': 'gold' });
      expect((await hz('PUT', '/servers/999999', { name: 'x' })).status).to.equal(404);
    });

    it('changes a snapshot\'s description and labels, but not a system image', async () => {
      const server = await createServer('snap-source');
      await waitFor('server running', async () => (await hz('GET', `/servers/${server.id}`)).body.server.status === 'running');
      const made = await hz('POST', `/servers/${server.id}/actions/create_image`, { description: 'before', labels: { kind: 'nightly' } });
      expect(made.status).to.equal(201);
      const id = made.body.image.id;

      const updated = await hz('PUT', `/images/${id}`, { description: 'after', type: 'snapshot', labels: { kind: 'weekly' } });
      expect(updated.status).to.equal(200);
      expect(updated.body.image).to.include({ id, description: 'after', type: 'snapshot' });
      expect(updated.body.image.labels).to.deep.equal({ kind: 'weekly' });
      expect((await hz('GET', `/images?label_selector=kind=weekly`)).body.images.map((i: { id: number }) => i.id)).to.deep.equal([id]);

      const bad = await hz('PUT', `/images/${id}`, { type: 'backup', description: 7, labels: { k: '$' } });
      expect(bad.status).to.equal(422);
      expect(bad.body.error.details.fields.map((f: { name: string }) => f.name)).to.deep.equal(['description', 'type', 'labels']);
      expect((await hz('GET', `/images/${id}`)).body.image.description).to.equal('after');

      const system = await systemImage('ubuntu-24.04', 'x86');
      const onSystem = await hz('PUT', `/images/${system.id}`, { description: 'mine' });
      expect(onSystem.status).to.equal(422);
      expect(onSystem.body.error.code).to.equal('unsupported_error');
      expect((await hz('DELETE', `/images/${system.id}`)).status).to.equal(422);
      expect((await hz('GET', `/images/${system.id}`)).body.image).to.deep.equal(system);
      expect((await hz('PUT', '/images/999999', { description: 'x' })).status).to.equal(404);
    });
  });
});
