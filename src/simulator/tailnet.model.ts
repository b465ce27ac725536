import { iso } from './hetzner.model';
import type { Random } from './random';

/** An error the Tailscale API would answer with: `{ message }`. */
export class TailscaleApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface AuthKeyRecord {
  id: string;
  secret: string;
  createdAt: number;
  expiresAt: number;
  expirySeconds: number;
  description: string;
  reusable: boolean;
  ephemeral: boolean;
  preauthorized: boolean;
  tags: string[];
  revokedAt: number | null;
  /** First use; a single-use key is spent from then on. */
  usedAt: number | null;
  uses: number;
}

export interface DeviceRecord {
  id: string;
  nodeId: string;
  hostname: string;
  name: string;
  addresses: string[];
  tags: string[];
  createdAt: number;
  ephemeral: boolean;
  authorized: boolean;
  /** The Hetzner server this device runs on; null for devices added through the control API. */
  serverId: number | null;
  connected: boolean;
  lastSeenAt: number | null;
  keyId: string | null;
  machineKey: string;
  nodeKey: string;
}

export type EnrollResult = { ok: true; device: DeviceRecord } | { ok: false; reason: string };

const DEFAULT_KEY_EXPIRY_SECONDS = 90 * 24 * 3600;
const TAG = /^tag:[A-Za-z][A-Za-z0-9-]*$/;
const KEY_DESCRIPTION = /^[A-Za-z0-9 -]{0,50}$/;
export const TAILNET_DNS_SUFFIX = 'tail5e1f.ts.net';
// Tagged devices never expire; Tailscale reports the zero time for them.
const ZERO_TIME = '0001-01-01T00:00:00Z';

function isCgnatIpv4(value: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(value);
  if (!m) return false;
  const [a, b, c, d] = m.slice(1).map(Number) as [number, number, number, number];
  return a === 100 && b >= 64 && b <= 127 && c <= 255 && d <= 255 && String(a) + '.' + b + '.' + c + '.' + d === value;
}

export class Tailnet {
  readonly keys = new Map<string, AuthKeyRecord>();
  readonly devices = new Map<string, DeviceRecord>();
  private readonly keysBySecret = new Map<string, AuthKeyRecord>();
  private readonly devicesByNodeId = new Map<string, DeviceRecord>();
  private readonly devicesByServer = new Map<number, DeviceRecord>();
  private readonly tokens = new Map<string, number>();
  private readonly addressesInUse = new Set<string>();
  private readonly namesInUse = new Set<string>();
  private nextDeviceId: number;

  constructor(
    private readonly deps: {
      random: Random;
      tokenTtlSeconds: () => number;
      /** Whether this OAuth client id and secret are one the tailnet issued. */
      isClient: (clientId: string, clientSecret: string) => boolean;
    },
  ) {
    this.nextDeviceId = 10_000_000_000 + deps.random.int(80_000_000_000);
  }

  reset(): void {
    const all = [this.keys, this.keysBySecret, this.devices, this.devicesByNodeId, this.devicesByServer, this.tokens, this.addressesInUse, this.namesInUse];
    for (const collection of all) collection.clear();
  }

  // ---- OAuth -------------------------------------------------------------------------------

  issueToken(clientId: string, clientSecret: string, now: number): { accessToken: string; expiresIn: number } {
    if (!clientId || !clientSecret || !this.deps.isClient(clientId, clientSecret)) {
      // What api.tailscale.com answers to unknown client credentials at /api/v2/oauth/token.
      throw new TailscaleApiError(401, 'API token invalid');
    }
    const accessToken = `tskey-api-${this.deps.random.string(12)}CNTRL-${this.deps.random.string(32)}`;
    const expiresIn = this.deps.tokenTtlSeconds();
    this.tokens.set(accessToken, now + expiresIn * 1000);
    return { accessToken, expiresIn };
  }

  authenticate(token: string | undefined, now: number): void {
    const expiresAt = token ? this.tokens.get(token) : undefined;
    if (expiresAt === undefined) throw new TailscaleApiError(401, 'API token invalid');
    if (expiresAt <= now) {
      this.tokens.delete(token as string);
      throw new TailscaleApiError(401, 'API token expired');
    }
  }

  revokeTokens(): number {
    const n = this.tokens.size;
    this.tokens.clear();
    return n;
  }

  // ---- auth keys ---------------------------------------------------------------------------

  createKey(body: unknown, now: number): AuthKeyRecord {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new TailscaleApiError(400, 'request body must be a JSON object');
    }
    const b = body as Record<string, unknown>;
    if (b.keyType !== undefined && b.keyType !== 'auth') {
      throw new TailscaleApiError(400, `keyType "${String(b.keyType)}" is not supported here, only "auth"`);
    }
    const devices = (b.capabilities as { devices?: unknown } | undefined)?.devices;
    if (typeof devices !== 'object' || devices === null) {
      throw new TailscaleApiError(400, 'capabilities.devices is required');
    }
    const create = ((devices as { create?: unknown }).create ?? {}) as Record<string, unknown>;
    for (const flag of ['reusable', 'ephemeral', 'preauthorized'] as const) {
      if (create[flag] !== undefined && typeof create[flag] !== 'boolean') {
        throw new TailscaleApiError(400, `capabilities.devices.create.${flag} must be a boolean`);
      }
    }
    const tags = create.tags ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string' && TAG.test(t))) {
      throw new TailscaleApiError(400, 'tags must be a list like ["tag:agent"]');
    }
    // Every token here comes from an OAuth client, and Tailscale requires tags on keys those create.
    if (tags.length === 0) {
      throw new TailscaleApiError(400, 'tags are required when creating a key with an OAuth client');
    }
    let expirySeconds = DEFAULT_KEY_EXPIRY_SECONDS;
    if (b.expirySeconds !== undefined) {
      if (typeof b.expirySeconds !== 'number' || !Number.isInteger(b.expirySeconds) || b.expirySeconds < 0) {
        throw new TailscaleApiError(400, 'expirySeconds must be a non-negative integer');
      }
      if (b.expirySeconds > DEFAULT_KEY_EXPIRY_SECONDS) {
        throw new TailscaleApiError(400, 'expirySeconds must be at most 90 days');
      }
      if (b.expirySeconds > 0) expirySeconds = b.expirySeconds;
    }
    const description = b.description ?? '';
    if (typeof description !== 'string' || !KEY_DESCRIPTION.test(description)) {
      throw new TailscaleApiError(
        400,
        'description must be at most 50 characters: letters, digits, spaces and hyphens',
      );
    }
    const id = `k${this.deps.random.string(11)}CNTRL`;
    const key: AuthKeyRecord = {
      id,
      secret: `tskey-auth-${id}-${this.deps.random.string(32)}`,
      createdAt: now,
      expiresAt: now + expirySeconds * 1000,
      expirySeconds,
      description,
      reusable: create.reusable === true,
      ephemeral: create.ephemeral === true,
      preauthorized: create.preauthorized === true,
      tags: [...(tags as string[])],
      revokedAt: null,
      usedAt: null,
      uses: 0,
    };
    this.keys.set(id, key);
    this.keysBySecret.set(key.secret, key);
    return key;
  }

  getKey(id: string): AuthKeyRecord {
    const key = this.keys.get(id);
    if (!key) throw new TailscaleApiError(404, 'key not found');
    return key;
  }

  /** Revokes; the record stays readable (as `invalid`), like Tailscale's. A second delete is a 404. */
  deleteKey(id: string, now: number): void {
    const key = this.keys.get(id);
    if (!key || key.revokedAt !== null) throw new TailscaleApiError(404, 'key not found');
    key.revokedAt = now;
  }

  keyProblem(key: AuthKeyRecord, now: number): string | undefined {
    if (key.revokedAt !== null) return 'auth key revoked';
    if (key.expiresAt <= now) return 'auth key expired';
    if (!key.reusable && key.usedAt !== null) return 'auth key already used';
    return undefined;
  }

  keyBody(k: AuthKeyRecord, now: number, withSecret: boolean) {
    return {
      id: k.id,
      ...(withSecret ? { key: k.secret } : {}),
      keyType: 'auth',
      expirySeconds: k.expirySeconds,
      created: iso(k.createdAt),
      updated: iso(k.revokedAt ?? k.usedAt ?? k.createdAt),
      expires: iso(k.expiresAt),
      ...(k.revokedAt !== null ? { revoked: iso(k.revokedAt) } : {}),
      capabilities: {
        devices: {
          create: { reusable: k.reusable, ephemeral: k.ephemeral, preauthorized: k.preauthorized, tags: [...k.tags] },
        },
      },
      description: k.description,
      invalid: this.keyProblem(k, now) !== undefined,
    };
  }

  // ---- devices -----------------------------------------------------------------------------

  /** What `tailscale up --auth-key=K --hostname=H` does on a server: join, if the key allows it. */
  enroll(o: { authKey: string; hostname: string; serverId: number }, now: number): EnrollResult {
    const key = this.keysBySecret.get(o.authKey);
    if (!key) return { ok: false, reason: 'auth key unknown' };
    const problem = this.keyProblem(key, now);
    if (problem) return { ok: false, reason: problem };
    key.uses++;
    key.usedAt ??= now;
    const device = this.addDevice(
      {
        hostname: o.hostname,
        tags: key.tags,
        ephemeral: key.ephemeral,
        authorized: key.preauthorized,
        serverId: o.serverId,
        keyId: key.id,
      },
      now,
    );
    return { ok: true, device };
  }

  addDevice(
    o: {
      hostname: string;
      tags?: string[];
      ephemeral?: boolean;
      authorized?: boolean;
      serverId?: number | null;
      keyId?: string | null;
      connected?: boolean;
    },
    now: number,
  ): DeviceRecord {
    const ipv4 = this.allocateAddress();
    const [a, b, c, d] = ipv4.split('.').map(Number);
    const hex = (x: number, y: number) => ((x << 8) | y).toString(16);
    const device: DeviceRecord = {
      id: String(this.nextDeviceId++),
      nodeId: `n${this.deps.random.string(10)}CNTRL`,
      hostname: o.hostname,
      name: this.allocateName(o.hostname),
      addresses: [ipv4, `fd7a:115c:a1e0::${hex(a, b)}:${hex(c, d)}`],
      tags: [...(o.tags ?? [])],
      createdAt: now,
      ephemeral: o.ephemeral ?? false,
      authorized: o.authorized ?? true,
      serverId: o.serverId ?? null,
      connected: o.connected ?? true,
      lastSeenAt: o.connected === false ? now : null,
      keyId: o.keyId ?? null,
      machineKey: `mkey:${this.deps.random.hex(64)}`,
      nodeKey: `nodekey:${this.deps.random.hex(64)}`,
    };
    this.devices.set(device.id, device);
    this.devicesByNodeId.set(device.nodeId, device);
    if (device.serverId !== null) this.devicesByServer.set(device.serverId, device);
    return device;
  }

  /** Accepts the legacy numeric id or the nodeId, as Tailscale does. */
  findDevice(idOrNodeId: string): DeviceRecord | undefined {
    return this.devices.get(idOrNodeId) ?? this.devicesByNodeId.get(idOrNodeId);
  }

  deleteDevice(idOrNodeId: string): boolean {
    const device = this.findDevice(idOrNodeId);
    if (!device) return false;
    this.devices.delete(device.id);
    this.devicesByNodeId.delete(device.nodeId);
    if (device.serverId !== null && this.devicesByServer.get(device.serverId) === device) {
      this.devicesByServer.delete(device.serverId);
    }
    this.namesInUse.delete(device.name);
    return true;
  }

  /**
   * POST /device/{id}/ip: an admin gives the device another tailnet IPv4 address. Any address in
   * 100.64.0.0/10 not held by another device may be given, including one a deleted device held.
   */
  setDeviceIpv4(idOrNodeId: string, ipv4: unknown): DeviceRecord {
    const device = this.findDevice(idOrNodeId);
    if (!device) throw new TailscaleApiError(404, 'device not found');
    if (typeof ipv4 !== 'string' || !isCgnatIpv4(ipv4)) {
      throw new TailscaleApiError(400, 'ipv4 must be an address in 100.64.0.0/10');
    }
    const holder = [...this.devices.values()].find((d) => d !== device && d.addresses.includes(ipv4));
    if (holder) throw new TailscaleApiError(409, `address ${ipv4} is already in use by another device`);
    const [a, b, c, d] = ipv4.split('.').map(Number) as [number, number, number, number];
    const hex = (x: number, y: number) => ((x << 8) | y).toString(16);
    device.addresses = [ipv4, `fd7a:115c:a1e0::${hex(a, b)}:${hex(c, d)}`];
    this.addressesInUse.add(ipv4);
    return device;
  }

  /** Control API: tags or hostname changed behind tailfleet's back (the admin console, another tool). */
  patchDevice(idOrNodeId: string, patch: { tags?: unknown; hostname?: unknown }): DeviceRecord | undefined {
    const device = this.findDevice(idOrNodeId);
    if (!device) return undefined;
    if (patch.tags !== undefined) {
      if (!Array.isArray(patch.tags) || !patch.tags.every((t) => typeof t === 'string' && TAG.test(t))) {
        throw new TailscaleApiError(400, 'tags must be a list of tag:name');
      }
      device.tags = [...(patch.tags as string[])];
    }
    if (patch.hostname !== undefined) {
      if (typeof patch.hostname !== 'string' || patch.hostname === '') throw new TailscaleApiError(400, 'hostname must be a string');
      device.hostname = patch.hostname;
    }
    return device;
  }

  deviceForServer(serverId: number): DeviceRecord | undefined {
    return this.devicesByServer.get(serverId);
  }

  /**
   * A machine restored from a snapshot starts tailscaled with the node state on its disk: the same
   * device, now on another server, comes back online. False when that device no longer exists.
   */
  restoreDevice(deviceId: string, serverId: number, at: number): boolean {
    const device = this.devices.get(deviceId);
    if (!device) return false;
    if (device.serverId !== null && this.devicesByServer.get(device.serverId) === device) this.devicesByServer.delete(device.serverId);
    device.serverId = serverId;
    this.devicesByServer.set(serverId, device);
    device.connected = true;
    device.lastSeenAt = at;
    return true;
  }

  /** A device is online while its server runs. */
  onServerPower(serverId: number, running: boolean, at: number): void {
    const device = this.devicesByServer.get(serverId);
    if (!device || device.connected === running) return;
    device.connected = running;
    if (!running) device.lastSeenAt = at;
  }

  /** The server is gone: the device stays (orphaned) unless it joined with an ephemeral key. */
  onServerDeleted(serverId: number, at: number): void {
    const device = this.devicesByServer.get(serverId);
    if (!device) return;
    if (device.ephemeral) {
      this.deleteDevice(device.id);
      return;
    }
    device.connected = false;
    device.lastSeenAt ??= at;
  }

  deviceBody(d: DeviceRecord) {
    return {
      addresses: [...d.addresses],
      id: d.id,
      nodeId: d.nodeId,
      user: d.tags.length > 0 ? 'tagged-devices' : 'operator@example.com',
      name: d.name,
      hostname: d.hostname,
      clientVersion: '1.82.5-t1d2e3f4a5-g0b1c2d3e4',
      updateAvailable: false,
      os: 'linux',
      created: iso(d.createdAt),
      connectedToControl: d.connected,
      ...(d.connected || d.lastSeenAt === null ? {} : { lastSeen: iso(d.lastSeenAt) }),
      keyExpiryDisabled: d.tags.length > 0,
      expires: d.tags.length > 0 ? ZERO_TIME : iso(d.createdAt + 180 * 24 * 3600 * 1000),
      authorized: d.authorized,
      isExternal: false,
      machineKey: d.machineKey,
      nodeKey: d.nodeKey,
      blocksIncomingConnections: false,
      tailnetLockKey: `nlpub:${d.nodeKey.slice(8, 72)}`,
      tailnetLockError: '',
      tags: [...d.tags],
      isEphemeral: d.ephemeral,
    };
  }

  private allocateAddress(): string {
    // Random over 100.64.0.0/10 like Tailscale's CGNAT range. Addresses are not handed out again
    // after a delete, so a stale tailnet IP stored by a client never points at a different device.
    for (;;) {
      const v = this.deps.random.int(1 << 22);
      const last = v & 0xff;
      if (last === 0 || last === 255) continue;
      const ip = `100.${64 + (v >> 16)}.${(v >> 8) & 0xff}.${last}`;
      if (!this.addressesInUse.has(ip)) {
        this.addressesInUse.add(ip);
        return ip;
      }
    }
  }

  private allocateName(hostname: string): string {
    const base = hostname.toLowerCase().replace(/[^a-z0-9-]/g, '-');
    let name = `${base}.${TAILNET_DNS_SUFFIX}`;
    for (let i = 1; this.namesInUse.has(name); i++) name = `${base}-${i}.${TAILNET_DNS_SUFFIX}`;
    this.namesInUse.add(name);
    return name;
  }
}
