import { CloudApiError, WaitTimeoutError, whenNotFound } from '../errors';
import {
  RequestCore,
  requestPolicyOf,
  runtimeOf,
  type AuthProvider,
  type ClientLogger,
  type ClientRuntime,
  type RateLimiter,
  type RequestPolicy,
} from '../http';
import { carriesTags, hostnameMatches } from './devices';
import { BatchPoller, KEEP_WAITING, PollVerdict, ReadCoalescer } from '../poller';
import type { CreatedAuthKey, OAuthTokenResponse, TailscaleDevice, TailscaleKey } from './tailscale.types';

export interface TailscaleClientDeps extends RequestPolicy, ClientRuntime {
  baseUrl: string;
  clientId: string;
  clientSecret: string;
  tailnet?: string;
  tags?: string[];
  enrollmentPollIntervalMs?: number;
  /** Default deadline of waitForEnrollment. */
  enrollmentTimeoutMs?: number;
  /** How long a shared listing (listDevicesShared, listAuthKeys) waits for more callers; default the enrollment poll interval. */
  listingWindowMs?: number;
  /** A cached token is replaced this long before it expires. */
  tokenRefreshMarginMs?: number;
  /** Where the OAuth client comes from, named when Tailscale rejects it. */
  clientSettings?: string;
}

/**
 * OAuth client-credentials access token, minted once and reused until shortly before it expires.
 * Concurrent callers share one in-flight token request.
 */
class OAuthTokenSource implements AuthProvider {
  private current?: { header: string; expiresAt: number };
  private inflight?: Promise<string>;

  constructor(
    private readonly mint: () => Promise<OAuthTokenResponse>,
    private readonly now: () => number,
    private readonly marginMs: number,
  ) {}

  header(): Promise<string> {
    if (this.current && this.now() < this.current.expiresAt - this.marginMs) {
      return Promise.resolve(this.current.header);
    }
    this.inflight ??= this.refresh().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  /** Drops the token the API refused; if another caller already replaced it, the new one is kept. */
  invalidate(rejected: string): boolean {
    if (this.current?.header === rejected) this.current = undefined;
    return true;
  }

  secret(): string | undefined {
    return this.current?.header.slice('Bearer '.length);
  }

  private async refresh(): Promise<string> {
    const res = await this.mint();
    const header = `Bearer ${res.access_token}`;
    this.current = { header, expiresAt: this.now() + (res.expires_in ?? 3600) * 1000 };
    return header;
  }
}

export class TailscaleClient {
  private readonly core: RequestCore;
  private readonly logger: ClientLogger;
  private readonly tailnet: string;
  /** Tags every agent device gets (TAILSCALE_TAGS): also what marks a device as an agent's. */
  readonly tags: string[];
  private readonly enrollmentTimeoutMs: number;
  private readonly tokens: OAuthTokenSource;
  private readonly enrollmentPoller: BatchPoller<string, TailscaleDevice[]>;
  /** Waits for known devices to come back online, by id. */
  private readonly devicePoller: BatchPoller<string, TailscaleDevice | null>;
  private readonly sharedDevices: ReadCoalescer<'devices', TailscaleDevice[]>;
  private readonly sharedKeys: ReadCoalescer<'keys', TailscaleKey[]>;
  private readonly enrollmentPollIntervalMs: number;

  constructor(deps: TailscaleClientDeps) {
    if (!deps.clientId || !deps.clientSecret) throw new Error('TailscaleClient needs an OAuth client id and secret');
    const { clientId, clientSecret } = deps;
    const runtime = runtimeOf(deps);
    const { now } = runtime;
    this.logger = runtime.logger;
    this.tailnet = deps.tailnet ?? '-';
    this.tags = deps.tags ?? ['tag:agent'];
    this.enrollmentTimeoutMs = deps.enrollmentTimeoutMs ?? 5 * 60_000;
    this.enrollmentPollIntervalMs = deps.enrollmentPollIntervalMs ?? 2000;

    this.tokens = new OAuthTokenSource(
      () =>
        this.core.request<OAuthTokenResponse>({
          method: 'POST',
          path: '/oauth/token',
          route: '/oauth/token',
          auth: false,
          // Minting a second token does no harm.
          idempotent: true,
          form: { client_id: clientId, client_secret: clientSecret, grant_type: 'client_credentials' },
          unauthorizedMessage: 'Tailscale rejected the OAuth client credentials',
          unauthorizedHint: deps.clientSettings ?? 'TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET',
        }),
      now,
      deps.tokenRefreshMarginMs ?? 60_000,
    );
    this.core = new RequestCore({
      api: 'tailscale',
      baseUrl: deps.baseUrl,
      ...requestPolicyOf(deps),
      ...runtime,
      auth: this.tokens,
      secrets: () => [clientSecret, this.tokens.secret()],
      // Tailscale does not document how its budget refills; assume nothing comes back before the reset.
      rateLimitModel: 'window',
    });
    this.enrollmentPoller = new BatchPoller({
      intervalMs: this.enrollmentPollIntervalMs,
      ...runtime,
      fetch: async (hostnames) => {
        const devices = await this.listDevices();
        return new Map(hostnames.map((h) => [h, devices.filter((d) => hostnameMatches(d, h))]));
      },
    });
    this.devicePoller = new BatchPoller({
      intervalMs: this.enrollmentPollIntervalMs,
      ...runtime,
      fetch: (ids) => this.fetchDevices(ids),
    });
    const listingWindow = { windowMs: deps.listingWindowMs ?? this.enrollmentPollIntervalMs, sleep: runtime.sleep };
    this.sharedDevices = new ReadCoalescer(async () => new Map([['devices', await this.listDevices()]]), listingWindow);
    this.sharedKeys = new ReadCoalescer(async () => new Map([['keys', await this.readAuthKeys()]]), listingWindow);
  }

  get rateLimiter(): RateLimiter {
    return this.core.rateLimiter;
  }

  /**
   * Single-use, preauthorized, tagged, and not ephemeral: the device must survive the server being
   * stopped and started. Sent once, never repeated by the client: a key made by a call whose answer
   * was lost is a live credential nobody holds the secret of, so after an unclear failure the caller
   * looks for it by its description (listAuthKeys) and revokes it.
   */
  async createAuthKey(o: { description?: string; expirySeconds?: number } = {}): Promise<CreatedAuthKey> {
    const key = await this.core.request<TailscaleKey>({
      method: 'POST',
      path: `/tailnet/${encodeURIComponent(this.tailnet)}/keys`,
      route: '/tailnet/{tailnet}/keys',
      idempotent: false,
      json: {
        capabilities: {
          devices: { create: { reusable: false, ephemeral: false, preauthorized: true, tags: this.tags } },
        },
        expirySeconds: o.expirySeconds ?? 3600,
        description: o.description,
      },
    });
    if (!key.key) {
      throw new CloudApiError({
        api: 'tailscale',
        status: 200,
        code: 'invalid_response',
        message: 'Tailscale API created an auth key but returned no key material',
        retryable: true,
        method: 'POST',
        path: '/tailnet/{tailnet}/keys',
      });
    }
    this.logger.info({ keyId: key.id }, `[Tailscale] Auth key ${key.id} created`);
    return { id: key.id, key: key.key, expires: key.expires };
  }

  /**
   * The tailnet's active keys (metadata, never secrets): auth keys not yet used, revoked or expired,
   * and API tokens. An entry that carries nothing but its id is read on its own for the rest.
   * Concurrent callers share one listing, taken after the last of them asked (within the listing
   * window): many provisions ending together cost a few listings, not one each.
   */
  listAuthKeys(): Promise<TailscaleKey[]> {
    return this.sharedKeys.get('keys');
  }

  private async readAuthKeys(): Promise<TailscaleKey[]> {
    const body = await this.core.request<{ keys?: TailscaleKey[] }>({
      method: 'GET',
      path: `/tailnet/${encodeURIComponent(this.tailnet)}/keys`,
      route: '/tailnet/{tailnet}/keys',
      idempotent: true,
    });
    const keys: TailscaleKey[] = [];
    for (const entry of body.keys ?? []) {
      const idOnly = Object.keys(entry).every((k) => k === 'id');
      const key = idOnly ? await this.getAuthKey(entry.id) : entry;
      if (key && !key.invalid) keys.push(key);
    }
    return keys;
  }

  /** The key's metadata (never its secret), or null when Tailscale does not know it. */
  getAuthKey(id: string): Promise<TailscaleKey | null> {
    return this.core.request<TailscaleKey>({ method: 'GET', ...this.authKeyPath(id), idempotent: true }).catch(whenNotFound(null));
  }

  async deleteAuthKey(id: string): Promise<boolean> {
    const deleted = await this.core.request({ method: 'DELETE', ...this.authKeyPath(id), idempotent: true }).then(() => true, whenNotFound(false));
    if (deleted) this.logger.info({ keyId: id }, `[Tailscale] Auth key ${id} deleted`);
    return deleted;
  }

  private authKeyPath(id: string): { path: string; route: string } {
    return { path: `/tailnet/${encodeURIComponent(this.tailnet)}/keys/${encodeURIComponent(id)}`, route: '/tailnet/{tailnet}/keys/{keyId}' };
  }

  async listDevices(): Promise<TailscaleDevice[]> {
    const body = await this.core.request<{ devices?: TailscaleDevice[] }>({
      method: 'GET',
      path: `/tailnet/${encodeURIComponent(this.tailnet)}/devices`,
      route: '/tailnet/{tailnet}/devices',
      idempotent: true,
    });
    return body.devices ?? [];
  }

  /**
   * The tailnet's devices from a listing taken after this call that concurrent callers share: every
   * call within a short window waits for one listing that starts after the last of them, so many
   * destroys looking for and confirming their devices cost a few listings, not one each.
   */
  listDevicesShared(): Promise<TailscaleDevice[]> {
    return this.sharedDevices.get('devices');
  }

  getDevice(id: string): Promise<TailscaleDevice | null> {
    return this.core
      .request<TailscaleDevice>({ method: 'GET', path: `/device/${encodeURIComponent(id)}`, route: '/device/{deviceId}', idempotent: true })
      .catch(whenNotFound(null));
  }

  /**
   * Waits for a known device to be connected to the control plane again (a machine restored from a
   * snapshot comes back as the same node). Resolves with the device once it is connected, or null
   * when the device no longer exists; WaitTimeoutError past the deadline.
   */
  waitForDeviceOnline(id: string, o: { timeoutMs?: number } = {}): Promise<TailscaleDevice | null> {
    const timeoutMs = o.timeoutMs ?? this.enrollmentTimeoutMs;
    return this.devicePoller.wait(id, {
      timeoutMs,
      immediate: true,
      evaluate: (device): PollVerdict<TailscaleDevice | null> =>
        !device || device.connectedToControl === true ? { done: true, value: device } : KEEP_WAITING,
      timeoutError: () =>
        new WaitTimeoutError({
          api: 'tailscale',
          code: 'device_offline',
          path: `/device/${id}`,
          message: `Tailscale device ${id} did not come back online within ${timeoutMs} ms`,
        }),
    });
  }

  /** 404 means the device is already gone, which is what the caller wanted: false, not an error. */
  async deleteDevice(id: string): Promise<boolean> {
    const deleted = await this.core
      .request({ method: 'DELETE', path: `/device/${encodeURIComponent(id)}`, route: '/device/{deviceId}', idempotent: true })
      .then(() => true, whenNotFound(false));
    this.logger.info({ deviceId: id }, `[Tailscale] Device ${id} ${deleted ? 'deleted from network' : 'was already gone'}`);
    return deleted;
  }

  async findDeviceByIp(ip: string): Promise<TailscaleDevice | undefined> {
    const devices = await this.listDevices();
    return devices.find((d) => d.addresses?.includes(ip));
  }

  async findDeviceByHostname(hostname: string): Promise<TailscaleDevice | undefined> {
    return (await this.listDevices()).find((d) => hostnameMatches(d, hostname));
  }

  /**
   * Resolves once a device with this hostname, carrying every one of the fleet's tags, is in the
   * tailnet and has addresses. A device under the hostname without the tags did not join with one of
   * our keys (those make tagged devices only): it is passed over, and handed to `onUntagged` once
   * (also when ours is found in the same listing).
   * Concurrent waits share one device listing per interval.
   */
  waitForEnrollment(
    hostname: string,
    o: { timeoutMs?: number; onUntagged?: (device: TailscaleDevice) => void } = {},
  ): Promise<TailscaleDevice> {
    const timeoutMs = o.timeoutMs ?? this.enrollmentTimeoutMs;
    const untagged = new Set<string>();
    return this.enrollmentPoller.wait(hostname, {
      timeoutMs,
      // A machine takes a while to boot and join: looks that grow apart (up to every 4 intervals).
      backoff: { factor: 1.5, maxIntervalMs: 4 * this.enrollmentPollIntervalMs },
      evaluate: (devices): PollVerdict<TailscaleDevice> => {
        for (const d of devices) {
          if (carriesTags(d, this.tags) || untagged.has(d.id)) continue;
          untagged.add(d.id);
          this.logger.warn(
            { deviceId: d.id, hostname, tags: d.tags ?? [] },
            `[Tailscale] Device ${d.id} is named ${hostname} but lacks the tags ${this.tags.join(',')}; not accepting it`,
          );
          o.onUntagged?.(d);
        }
        const ours = devices.find((d) => carriesTags(d, this.tags) && d.addresses?.length > 0);
        return ours ? { done: true, value: ours } : KEEP_WAITING;
      },
      timeoutError: () =>
        new WaitTimeoutError({
          api: 'tailscale',
          code: 'enrollment_timeout',
          path: '/tailnet/{tailnet}/devices',
          message:
            `No Tailscale device with hostname '${hostname}' and tags ${this.tags.join(',')} enrolled within ${timeoutMs} ms` +
            (untagged.size > 0 ? ` (untagged device ${[...untagged].join(', ')} has the hostname)` : ''),
        }),
    });
  }

  /** One device by id, or for several one listing (a device it does not show is read by id: gone or not). */
  private async fetchDevices(ids: string[]): Promise<Map<string, TailscaleDevice | null | Error>> {
    const out = new Map<string, TailscaleDevice | null | Error>();
    let unlisted = ids;
    if (ids.length > 1) {
      try {
        const byId = new Map((await this.listDevices()).map((d) => [d.id, d]));
        unlisted = ids.filter((id) => !byId.has(id));
        for (const id of ids) if (byId.has(id)) out.set(id, byId.get(id)!);
      } catch (err) {
        for (const id of ids) out.set(id, err as Error);
        return out;
      }
    }
    await Promise.all(unlisted.map(async (id) => out.set(id, await this.getDevice(id).catch((e: Error) => e))));
    return out;
  }
}
