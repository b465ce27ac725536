import { createHash } from 'node:crypto';
import { byIdOrName } from './hetzner.catalog';
import { HetznerApiError, iso, jsonObject, labelFilter, labelsAfter, refuseInvalid, sortedPage, type FieldProblem, type Pagination } from './hetzner.model';
import { LabelSelectorCache } from './label-selector';

/** What Hetzner lists as supported in its own `invalid_input` answer to an unknown key type. */
const KEY_TYPES = [
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-dss',
  'sk-ssh-ed25519',
  'sk-ecdsa-sha2-nistp256',
  'sk-ecdsa-sha2-nistp384',
  'sk-ecdsa-sha2-nistp521',
];
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface SshKeyRecord {
  id: number;
  name: string;
  publicKey: string;
  fingerprint: string;
  labels: Record<string, string>;
  createdAt: number;
}

/** A key to have in the project from the start (and again after a reset): a name, or a name and its public key. */
export type SimSshKeyInput = string | { name: string; public_key?: string; labels?: Record<string, string> };

export interface SshKeyQuery {
  name?: string;
  fingerprint?: string;
  labelSelector?: string;
  sort?: string[];
  page?: string;
  perPage?: string;
}


/**
 * The key's MD5 fingerprint in colon hex, as Hetzner (and `ssh-keygen -E md5 -l`) shows it: the hash
 * of the decoded key blob, not of the text. A line that is not an OpenSSH public key is a problem.
 */
export function sshKeyFingerprint(publicKey: string): { fingerprint: string } | { problem: string } {
  const [type, data] = publicKey.trim().split(/\s+/);
  // The security-key types are written with their `@openssh.com` suffix in a key line.
  if (!type || !KEY_TYPES.includes(type.replace(/@openssh\.com$/, ''))) {
    return { problem: `SSH key type is invalid (supported types: ${KEY_TYPES.join(', ')})` };
  }
  const blob = data && BASE64.test(data) ? Buffer.from(data, 'base64') : Buffer.alloc(0);
  // The blob starts with its own type as an SSH string (uint32 length, bytes): it must be the line's.
  const named = blob.length >= 4 ? blob.subarray(4, 4 + blob.readUInt32BE(0)).toString('latin1') : '';
  if (named !== type || blob.length <= 4 + type.length) return { problem: 'SSH key is invalid' };
  const md5 = createHash('md5').update(blob).digest('hex');
  return { fingerprint: md5.match(/../g)!.join(':') };
}

/** A well-formed ed25519 public key made from a name, for keys seeded by name only. */
export function seedPublicKey(name: string): string {
  const sshString = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  const key = createHash('sha256').update(`tailfleet-simulator:${name}`).digest();
  const blob = Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(key)]);
  return `ssh-ed25519 ${blob.toString('base64')} ${name.replace(/\s+/g, '-')}@simulator`;
}

/** The project's SSH keys: `/ssh_keys`, and what `ssh_keys` in POST /servers must name. */
export class SshKeyStore {
  readonly keys = new Map<number, SshKeyRecord>();
  private readonly selectors = new LabelSelectorCache();
  private readonly seeded: SshKeyRecord[] = [];
  // Never reused, even across reset(), so an id from an earlier test cannot name a newer key.
  private nextId = 8_101_001;

  constructor(
    private readonly deps: {
      now: () => number;
      /** Created in the project before anything else; reset() brings them back with the same ids. */
      seed?: SimSshKeyInput[];
    },
  ) {
    const at = deps.now();
    for (const input of deps.seed ?? []) {
      const body = typeof input === 'string' ? { name: input } : input;
      const key = this.create({ public_key: seedPublicKey(body.name), ...body }, at);
      this.seeded.push({ ...key, labels: { ...key.labels } });
    }
  }

  reset(): void {
    this.keys.clear();
    for (const key of this.seeded) this.keys.set(key.id, { ...key, labels: { ...key.labels } });
  }

  /** POST /ssh_keys. */
  create(body: unknown, now: number): SshKeyRecord {
    const b = jsonObject(body);
    const fields: FieldProblem[] = [];
    if (b.name === undefined) fields.push({ name: 'name', messages: ['Missing data for required field.'] });
    else if (typeof b.name !== 'string' || b.name.trim() === '') fields.push({ name: 'name', messages: ['must be a non-empty string'] });
    let fingerprint = '';
    if (b.public_key === undefined) fields.push({ name: 'public_key', messages: ['Missing data for required field.'] });
    else if (typeof b.public_key !== 'string') fields.push({ name: 'public_key', messages: ['must be a string'] });
    else {
      const parsed = sshKeyFingerprint(b.public_key);
      if ('problem' in parsed) fields.push({ name: 'public_key', messages: [parsed.problem] });
      else fingerprint = parsed.fingerprint;
    }
    refuseInvalid(b, fields);
    const name = b.name as string;
    this.assertNameFree(name);
    if ([...this.keys.values()].some((k) => k.fingerprint === fingerprint)) {
      throw new HetznerApiError(409, 'uniqueness_error', 'SSH key with the same fingerprint already exists', {
        fields: [{ name: 'public_key' }],
      });
    }
    const key: SshKeyRecord = {
      id: this.nextId++,
      name,
      publicKey: (b.public_key as string).trim(),
      fingerprint,
      labels: { ...((b.labels as Record<string, string> | undefined) ?? {}) },
      createdAt: now,
    };
    this.keys.set(key.id, key);
    return key;
  }

  get(id: number): SshKeyRecord {
    const key = this.keys.get(id);
    if (!key) throw new HetznerApiError(404, 'not_found', `SSH key with ID '${id}' not found`);
    return key;
  }

  delete(id: number): void {
    this.keys.delete(this.get(id).id);
  }

  /** PUT /ssh_keys/{id}: a new name and/or labels (labels replace the old set). */
  update(id: number, body: unknown): SshKeyRecord {
    const key = this.get(id);
    const b = jsonObject(body);
    const fields: FieldProblem[] = [];
    if (b.name !== undefined && (typeof b.name !== 'string' || b.name.trim() === '')) {
      fields.push({ name: 'name', messages: ['must be a non-empty string'] });
    }
    refuseInvalid(b, fields);
    if (typeof b.name === 'string' && b.name !== key.name) {
      this.assertNameFree(b.name);
      key.name = b.name;
    }
    key.labels = labelsAfter(b, key.labels);
    return key;
  }

  list(q: SshKeyQuery): { items: SshKeyRecord[]; pagination: Pagination } {
    const predicate = labelFilter(this.selectors, q.labelSelector);
    const items = [...this.keys.values()].filter(
      (k) =>
        (q.name === undefined || k.name === q.name) &&
        (q.fingerprint === undefined || k.fingerprint === q.fingerprint) &&
        (!predicate || predicate(k.labels)),
    );
    return sortedPage(items, q, (k) => k.name);
  }

  /** A key named in POST /servers `ssh_keys` (an id or a name); undefined when the project has none such. */
  find(ref: string | number): SshKeyRecord | undefined {
    return byIdOrName(
      ref,
      (name) => [...this.keys.values()].find((k) => k.name === name),
      (id) => this.keys.get(id),
    );
  }

  body(k: SshKeyRecord) {
    return {
      id: k.id,
      name: k.name,
      fingerprint: k.fingerprint,
      public_key: k.publicKey,
      labels: { ...k.labels },
      created: iso(k.createdAt),
    };
  }

  private assertNameFree(name: string): void {
    if ([...this.keys.values()].some((k) => k.name === name)) {
      throw new HetznerApiError(409, 'uniqueness_error', 'SSH key with the same name already exists', { fields: [{ name: 'name' }] });
    }
  }
}
