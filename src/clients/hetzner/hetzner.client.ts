import { ActionFailedError, CloudApiError, WaitTimeoutError, whenNotFound } from '../errors';
import {
  RateLimiter,
  RequestCore,
  requestPolicyOf,
  runtimeOf,
  type ClientLogger,
  type ClientRuntime,
  type RequestPolicy,
} from '../http';
import { BatchPoller, KEEP_WAITING, PollVerdict, type Backoff } from '../poller';
import { SharedListing } from './shared-listing';
import type {
  CreateImageOptions,
  CreateImageResult,
  CreateServerOptions,
  CreateServerResult,
  HetznerAction,
  HetznerImage,
  HetznerLocation,
  HetznerPagination,
  HetznerPricing,
  HetznerServer,
  HetznerServerType,
  PowerOnResult,
  ShutdownResult,
} from './hetzner.types';

export interface HetznerClientDeps extends RequestPolicy, ClientRuntime {
  baseUrl: string;
  token: string;
  actionPollIntervalMs?: number;
  serverPollIntervalMs?: number;
  /** Default deadline of waitForAction(s). */
  actionTimeoutMs?: number;
  /** Default deadline of waitForServerStatus. */
  serverWaitTimeoutMs?: number;
  managedLabelSelector?: string;
  /**
   * A label whose value tells each server from every other (tailfleet's instance label). The servers
   * a status poll waits for are then listed by that label (`k in (…)`, up to a page of them per
   * request) rather than by the whole managed listing: fewer requests on a large fleet and answers
   * that carry only the servers asked for. A server whose label this client has not seen yet is read
   * as before.
   */
  identityLabel?: string;
  /** How long a shared listing (listServersShared, listImagesShared) waits for more callers; default the server poll interval. */
  listingWindowMs?: number;
  /** Where the token comes from, named when the API rejects it (default HETZNER_API_TOKEN). */
  tokenSetting?: string;
}

/** The API accepts at most this many `id` filters per GET /actions, the same chunk hcloud-go uses. */
const ACTION_IDS_PER_REQUEST = 25;
const SERVERS_PER_PAGE = 50;
/** Servers whose identity label is remembered (the oldest forgotten first); a fleet's worth. */
const IDENTITIES_KEPT = 20_000;
/** A label value that can stand in a selector's `in (…)` list as it is. */
const SELECTOR_SAFE_VALUE = /^[A-Za-z0-9._-]{1,63}$/;

export class HetznerClient {
  private readonly core: RequestCore;
  private readonly logger: ClientLogger;
  private readonly now: () => number;
  private readonly actionTimeoutMs: number;
  private readonly serverWaitTimeoutMs: number;
  private readonly managedLabelSelector: string;
  private readonly actionPoller: BatchPoller<number, HetznerAction>;
  /** Every read and status wait of a server: the reads before power actions join the status polls. */
  private readonly serverPoller: BatchPoller<number, HetznerServer | null>;
  private readonly imagePoller: BatchPoller<number, HetznerImage | null>;
  private readonly sharedServers: SharedListing<HetznerServer>;
  private readonly sharedImages: Map<string, SharedListing<HetznerImage>> = new Map();
  /** Pages the managed listing took last time; decides between one listing and per-server reads. */
  private managedListingPages = 1;
  private readonly identityLabel: string | undefined;
  /** Server id → its identity label's value, from the servers this client has read. */
  private readonly identities = new Map<number, string>();
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly listingWindowMs: number;
  /** A shutdown is looked at after 1, 3, 7 poll intervals, then every 4. */
  private readonly shutdownBackoff: Backoff;

  constructor(deps: HetznerClientDeps) {
    if (!deps.token) throw new Error('HetznerClient needs a token');
    const token = deps.token;
    const runtime = runtimeOf(deps);
    ({ logger: this.logger, now: this.now, sleep: this.sleep } = runtime);
    this.listingWindowMs = deps.listingWindowMs ?? deps.serverPollIntervalMs ?? 1000;
    this.shutdownBackoff = { factor: 2, maxIntervalMs: 4 * (deps.serverPollIntervalMs ?? 1000) };
    this.actionTimeoutMs = deps.actionTimeoutMs ?? 10 * 60_000;
    this.serverWaitTimeoutMs = deps.serverWaitTimeoutMs ?? 5 * 60_000;
    this.managedLabelSelector = deps.managedLabelSelector ?? 'managed-by=tailfleet';
    this.identityLabel = deps.identityLabel;
    this.core = new RequestCore({
      api: 'hetzner',
      baseUrl: deps.baseUrl,
      ...requestPolicyOf(deps),
      ...runtime,
      auth: { header: async () => `Bearer ${token}` },
      secrets: () => [token],
      unauthorizedHint: deps.tokenSetting ?? 'HETZNER_API_TOKEN',
      rateLimitModel: 'refill',
    });
    this.actionPoller = new BatchPoller({
      intervalMs: deps.actionPollIntervalMs ?? 1000,
      ...runtime,
      fetch: (ids) => this.fetchActions(ids),
    });
    this.serverPoller = new BatchPoller({
      intervalMs: deps.serverPollIntervalMs ?? 1000,
      ...runtime,
      fetch: (ids) => this.fetchServers(ids),
      // A listing page or a read per server, whichever is fewer; by identity, a page per 50 (see fetchServers).
      cost: (ids) => Math.min(ids, this.managedListingPages, this.identityLabel ? Math.ceil(ids / SERVERS_PER_PAGE) : Infinity),
    });
    this.imagePoller = new BatchPoller({
      intervalMs: deps.serverPollIntervalMs ?? 1000,
      ...runtime,
      fetch: async (ids) => new Map(await Promise.all(ids.map(async (id) => [id, await this.getImage(id).catch((e: Error) => e)] as const))),
    });
    this.sharedServers = new SharedListing({
      base: this.managedLabelSelector,
      list: async (selector) => {
        const { servers, pages, complete } = await this.listServersWithPages(selector);
        return { items: servers, pages, complete };
      },
      windowMs: this.listingWindowMs,
      sleep: this.sleep,
    });
  }

  get rateLimiter(): RateLimiter {
    return this.core.rateLimiter;
  }

  /** Not retried on ambiguous failures: a timed-out create may have made the server. Only 429 is repeated. */
  async createServer(o: CreateServerOptions): Promise<CreateServerResult> {
    const body = await this.core.request<{
      server: HetznerServer;
      action: HetznerAction;
      next_actions?: HetznerAction[];
    }>({
      method: 'POST',
      path: '/servers',
      route: '/servers',
      idempotent: false,
      json: {
        name: o.name,
        server_type: o.serverType,
        image: o.image,
        location: o.location,
        ssh_keys: o.sshKeys,
        user_data: o.userData,
        labels: o.labels,
        start_after_create: true,
        ...(o.publicIpv4 === false ? { public_net: { enable_ipv4: false, enable_ipv6: true } } : {}),
      },
    });
    this.logger.info({ serverId: body.server.id, name: o.name }, `[Hetzner] Server ${body.server.id} created`);
    this.remember(body.server);
    return { server: body.server, action: body.action, nextActions: body.next_actions ?? [] };
  }

  getServer(id: number): Promise<HetznerServer | null> {
    return this.core
      .request<{ server: HetznerServer }>({ method: 'GET', path: `/servers/${id}`, route: '/servers/{id}', idempotent: true })
      .then((body) => this.remember(body.server), whenNotFound(null));
  }

  /**
   * PUT /servers/{id}: the server's labels (the whole set: Hetzner replaces it) and, when given, its
   * name. Safe to repeat: the same body leaves the same server.
   */
  async updateServer(id: number, o: { labels: Record<string, string>; name?: string }): Promise<HetznerServer> {
    const body = await this.core.request<{ server: HetznerServer }>({
      method: 'PUT',
      path: `/servers/${id}`,
      route: '/servers/{id}',
      json: { labels: o.labels, ...(o.name !== undefined ? { name: o.name } : {}) },
      idempotent: true,
    });
    return body.server;
  }

  async listServers(labelSelector?: string): Promise<HetznerServer[]> {
    return (await this.listServersWithPages(labelSelector)).servers;
  }

  /**
   * Like listServers, from a listing taken after this call that concurrent callers share (see
   * SharedListing): many destroys confirming their servers gone cost a few listings, not one each.
   */
  listServersShared(labelSelector: string): Promise<HetznerServer[]> {
    return this.sharedServers.list(labelSelector);
  }

  async deleteServer(id: number): Promise<boolean> {
    const action = await this.core
      .request<{ action: HetznerAction }>({ method: 'DELETE', path: `/servers/${id}`, route: '/servers/{id}', idempotent: true })
      .then((body) => body.action, whenNotFound(null));
    if (!action) {
      this.logger.info({ serverId: id }, `[Hetzner] Server ${id} already deleted`);
      return false;
    }
    await this.settleAction(action);
    this.logger.info({ serverId: id }, `[Hetzner] Server ${id} deleted`);
    return true;
  }

  /**
   * Hetzner's shutdown action succeeds once the ACPI signal is sent, not when the server is off,
   * so the server itself is watched until `off`; past the deadline it is powered off.
   */
  async shutdownServer(
    id: number,
    o: { timeoutMs?: number; verify?: (server: HetznerServer) => Promise<void> } = {},
  ): Promise<ShutdownResult> {
    const timeoutMs = o.timeoutMs ?? 60_000;
    const server = await this.readServer(id);
    if (!server) throw this.serverNotFound(id, 'shutdown');
    if (server.status === 'off') {
      this.logger.info({ serverId: id }, `[Hetzner] Server ${id} is already off`);
      return 'already_off';
    }
    // The caller's last word on the server it is about to switch off (the ownership guard), on the read just made.
    if (o.verify) await o.verify(server);

    const startedAt = this.now();
    const action = await this.serverAction(id, 'shutdown');
    if (action.status === 'error') throw new ActionFailedError(action);
    try {
      // Only the server says when it is off, so it alone is watched (no poll of the action as well),
      // with looks that grow apart: an OS takes a while to shut down.
      const remaining = Math.max(0, timeoutMs - (this.now() - startedAt));
      const off = await this.waitForServerStatus(id, 'off', { timeoutMs: remaining, backoff: this.shutdownBackoff });
      if (!off) throw this.serverNotFound(id, 'shutdown');
      this.logger.info({ serverId: id }, `[Hetzner] Server ${id} shut down gracefully`);
      return 'graceful';
    } catch (err) {
      if (!(err instanceof WaitTimeoutError)) throw err;
    }
    // Not off in time: a shutdown that failed is reported as such; one the OS ignored is forced.
    const sent = (await this.fetchActions([action.id])).get(action.id);
    if (sent instanceof Error) throw sent;
    if (sent?.status === 'error') throw new ActionFailedError(sent);
    this.logger.warn(
      { serverId: id, timeoutMs },
      `[Hetzner] Server ${id} did not shut down within ${Math.round(timeoutMs / 1000)}s, falling back to forced power off`,
    );
    await this.powerOffServer(id);
    return 'forced';
  }

  async powerOnServer(id: number): Promise<PowerOnResult> {
    const server = await this.readServer(id);
    if (!server) throw this.serverNotFound(id, 'poweron');
    if (server.status === 'running') {
      this.logger.info({ serverId: id }, `[Hetzner] Server ${id} is already running`);
      return 'already_running';
    }
    await this.settleAction(await this.serverAction(id, 'poweron'));
    this.logger.info({ serverId: id }, `[Hetzner] Server ${id} powered on`);
    return 'powered_on';
  }

  /** Cuts power like pulling the plug: unsaved data on the server may be lost. */
  async powerOffServer(id: number): Promise<void> {
    await this.settleAction(await this.serverAction(id, 'poweroff'));
    this.logger.warn({ serverId: id }, `[Hetzner] Server ${id} forced power off`);
  }

  /** Sends the ACPI reboot signal; whether the OS reacts is up to it (the action only confirms the signal). */
  async rebootServer(id: number): Promise<void> {
    await this.settleAction(await this.serverAction(id, 'reboot'));
    this.logger.info({ serverId: id }, `[Hetzner] Server ${id} sent the reboot signal`);
  }

  /** Cuts power and starts the server again, like pulling the plug: unsaved data may be lost. */
  async resetServer(id: number): Promise<void> {
    await this.settleAction(await this.serverAction(id, 'reset'));
    this.logger.warn({ serverId: id }, `[Hetzner] Server ${id} reset`);
  }

  // ---- images (snapshots) -----------------------------------------------------------------------

  /**
   * Starts a snapshot of the server's disk (POST /servers/{id}/actions/create_image, type snapshot).
   * Not retried on ambiguous failures: a lost answer may still have made an image, so callers look
   * it up by its labels before asking again.
   */
  async createSnapshot(serverId: number, o: CreateImageOptions): Promise<CreateImageResult> {
    const body = await this.core.request<{ image: HetznerImage; action: HetznerAction }>({
      method: 'POST',
      path: `/servers/${serverId}/actions/create_image`,
      route: '/servers/{id}/actions/create_image',
      idempotent: false,
      json: { type: 'snapshot', description: o.description, labels: o.labels },
    });
    this.logger.info({ serverId, imageId: body.image.id }, `[Hetzner] Snapshot ${body.image.id} of server ${serverId} started`);
    return { image: body.image, action: body.action };
  }

  getImage(id: number): Promise<HetznerImage | null> {
    return this.core
      .request<{ image: HetznerImage }>({ method: 'GET', path: `/images/${id}`, route: '/images/{id}', idempotent: true })
      .then((body) => body.image, whenNotFound(null));
  }

  /** Images of a type matching a label selector, every page. */
  async listImages(o: { type?: 'snapshot' | 'backup' | 'system' | 'app'; labelSelector?: string } = {}): Promise<HetznerImage[]> {
    return this.listAll<HetznerImage>('/images', 'images', { type: o.type, label_selector: o.labelSelector });
  }

  /** Like listImages, from a listing taken after this call that concurrent callers share (see listServersShared). */
  listImagesShared(o: { type?: 'snapshot' | 'backup' | 'system' | 'app'; labelSelector: string }): Promise<HetznerImage[]> {
    const type = o.type ?? '';
    let shared = this.sharedImages.get(type);
    if (!shared) {
      shared = new SharedListing<HetznerImage>({
        base: this.managedLabelSelector,
        list: (selector) => this.listAllPaged<HetznerImage>('/images', 'images', { type: o.type, label_selector: selector }),
        windowMs: this.listingWindowMs,
        sleep: this.sleep,
      });
      this.sharedImages.set(type, shared);
    }
    return shared.list(o.labelSelector);
  }

  /** Deletes an image; false when it was already gone. */
  async deleteImage(id: number): Promise<boolean> {
    const deleted = await this.core
      .request<unknown>({ method: 'DELETE', path: `/images/${id}`, route: '/images/{id}', idempotent: true })
      .then(() => true, whenNotFound(false));
    this.logger.info({ imageId: id }, `[Hetzner] Image ${id} ${deleted ? 'deleted' : 'already deleted'}`);
    return deleted;
  }

  /**
   * Resolves with the image once it is `available`; null once it no longer exists. Polled by the
   * image itself (not its action), so a resumed job that never saw the action can wait the same way.
   */
  waitForImageAvailable(id: number, o: { timeoutMs?: number } = {}): Promise<HetznerImage | null> {
    const timeoutMs = o.timeoutMs ?? this.actionTimeoutMs;
    return this.imagePoller.wait(id, {
      timeoutMs,
      immediate: true,
      evaluate: (image): PollVerdict<HetznerImage | null> => {
        if (!image || image.status === 'available') return { done: true, value: image };
        if (image.status === 'unavailable') {
          throw new CloudApiError({
            api: 'hetzner',
            status: 0,
            code: 'image_unavailable',
            message: `Hetzner image ${id} is unavailable`,
            retryable: true,
            method: 'GET',
            path: `/images/${id}`,
          });
        }
        return KEEP_WAITING;
      },
      timeoutError: this.waitTimeout('image_timeout', `/images/${id}`, `Hetzner image ${id} was not available within ${timeoutMs} ms`),
    });
  }

  // ---- prices ---------------------------------------------------------------------------------

  /** GET /pricing: the project's currency, VAT and the price of every resource. */
  async getPricing(): Promise<HetznerPricing> {
    const body = await this.core.request<{ pricing: HetznerPricing }>({ method: 'GET', path: '/pricing', route: '/pricing', idempotent: true });
    return body.pricing;
  }

  /** GET /server_types, every page: disk sizes and per-location prices. */
  listServerTypes(): Promise<HetznerServerType[]> {
    return this.listAll<HetznerServerType>('/server_types', 'server_types', {});
  }

  /**
   * Resolves when the action succeeds; rejects with ActionFailedError when it ends in `error`.
   * All waits in this client share one poller: one GET /actions?id=…&id=… per interval for up to
   * 25 pending actions, however many callers wait.
   */
  waitForAction(id: number, o: { timeoutMs?: number } = {}): Promise<HetznerAction> {
    const timeoutMs = o.timeoutMs ?? this.actionTimeoutMs;
    return this.actionPoller.wait(id, {
      timeoutMs,
      evaluate: (action): PollVerdict<HetznerAction> => {
        if (action.status === 'success') return { done: true, value: action };
        if (action.status === 'error') throw new ActionFailedError(action);
        return KEEP_WAITING;
      },
      timeoutError: this.waitTimeout('action_timeout', `/actions/${id}`, `Hetzner action ${id} did not finish within ${timeoutMs} ms`),
    });
  }

  waitForActions(ids: number[], o: { timeoutMs?: number } = {}): Promise<HetznerAction[]> {
    return Promise.all(ids.map((id) => this.waitForAction(id, o)));
  }

  /**
   * Resolves with the server once it has `status`, or null once it no longer exists. Concurrent
   * waits share requests: one GET per server while few wait, one labelled listing for all of them
   * when that is cheaper.
   */
  waitForServerStatus(id: number, status: string, o: { timeoutMs?: number; backoff?: Backoff } = {}): Promise<HetznerServer | null> {
    const timeoutMs = o.timeoutMs ?? this.serverWaitTimeoutMs;
    return this.serverPoller.wait(id, {
      timeoutMs,
      backoff: o.backoff,
      evaluate: (server): PollVerdict<HetznerServer | null> => {
        if (server === null) return { done: true, value: null };
        return server.status === status ? { done: true, value: server } : KEEP_WAITING;
      },
      timeoutError: this.waitTimeout('server_status_timeout', `/servers/${id}`, `Hetzner server ${id} did not reach status '${status}' within ${timeoutMs} ms`),
    });
  }

  /**
   * The server (null once it no longer exists) as the next shared round reads it, batched with every
   * wait and read of that round; like getServer, never an answer read before the call.
   */
  readServer(id: number): Promise<HetznerServer | null> {
    return this.serverPoller.read(id, {
      timeoutMs: this.serverWaitTimeoutMs,
      timeoutError: this.waitTimeout('server_read_timeout', `/servers/${id}`, `Hetzner server ${id} could not be read`),
    });
  }

  /** What a wait of this client ends with past its deadline. */
  private waitTimeout(code: string, path: string, message: string): () => WaitTimeoutError {
    return () => new WaitTimeoutError({ api: 'hetzner', code, path, message });
  }

  /** Skips the poll when the API already reported the action finished. */
  private async settleAction(action: HetznerAction): Promise<HetznerAction> {
    if (action.status === 'success') return action;
    if (action.status === 'error') throw new ActionFailedError(action);
    return this.waitForAction(action.id);
  }

  private async serverAction(id: number, name: 'shutdown' | 'poweron' | 'poweroff' | 'reboot' | 'reset'): Promise<HetznerAction> {
    // Power actions are safe to repeat: a second shutdown/poweron/poweroff ends in the same state.
    const body = await this.core.request<{ action: HetznerAction }>({
      method: 'POST',
      path: `/servers/${id}/actions/${name}`,
      route: `/servers/{id}/actions/${name}`,
      idempotent: true,
    });
    return body.action;
  }

  /** Every location (all pages). */
  listLocations(): Promise<HetznerLocation[]> {
    return this.listAll<HetznerLocation>('/locations', 'locations', {});
  }

  /** A short listing (images, server types, locations) read page by page, following next_page. */
  private async listAll<T>(path: string, key: string, query: Record<string, string | undefined>): Promise<T[]> {
    return (await this.listAllPaged<T>(path, key, query)).items;
  }

  /** `complete` as for listServersWithPages. */
  private async listAllPaged<T>(
    path: string,
    key: string,
    query: Record<string, string | undefined>,
  ): Promise<{ items: T[]; pages: number; complete: boolean }> {
    const out: T[] = [];
    const totals = new Set<number | null>();
    let reads = 0;
    let page: number | null | undefined = 1;
    for (; page && reads < 100; reads++) {
      const body: Record<string, unknown> & { meta?: { pagination?: HetznerPagination } } = await this.core.request({
        method: 'GET',
        path,
        route: path,
        idempotent: true,
        query: { ...query, page, per_page: SERVERS_PER_PAGE },
      });
      out.push(...((body[key] as T[] | undefined) ?? []));
      totals.add(body.meta?.pagination?.total_entries ?? (reads === 0 && !body.meta?.pagination?.next_page ? out.length : null));
      const next: number | null | undefined = body.meta?.pagination?.next_page;
      page = next && next > page ? next : null;
    }
    const complete = !page && totals.size === 1 && [...totals][0] === out.length;
    return { items: out, pages: reads, complete };
  }

  /**
   * `complete`: every page reported the same total and that many servers came back. Pages read while
   * servers are deleted shift, and a server can slip from a later page to one already read: a
   * listing that is not complete may lack a server that exists.
   */
  private async listServersWithPages(labelSelector?: string): Promise<{ servers: HetznerServer[]; pages: number; complete: boolean }> {
    const page = (n: number) =>
      this.core.request<{ servers: HetznerServer[]; meta?: { pagination?: HetznerPagination } }>({
        method: 'GET',
        path: '/servers',
        route: '/servers',
        idempotent: true,
        query: { label_selector: labelSelector, page: n, per_page: SERVERS_PER_PAGE },
      });
    const first = await page(1);
    const servers = [...first.servers];
    for (const x of first.servers) this.remember(x);
    const pagination = first.meta?.pagination;
    if (!pagination?.next_page) return { servers, pages: 1, complete: true };
    // The first page says how many there are; fetch the rest together rather than one after another.
    const last = pagination.last_page ?? Math.ceil((pagination.total_entries ?? 0) / SERVERS_PER_PAGE);
    if (last > 1) {
      const rest = await Promise.all(Array.from({ length: last - 1 }, (_, i) => page(i + 2)));
      // A server deleted meanwhile shifts the pages; never report one twice.
      const seen = new Set(servers.map((x) => x.id));
      for (const x of rest.flatMap((p) => p.servers)) {
        this.remember(x);
        if (seen.has(x.id)) continue;
        seen.add(x.id);
        servers.push(x);
      }
      const totals = new Set([first, ...rest].map((p) => p.meta?.pagination?.total_entries ?? null));
      const complete = totals.size === 1 && !totals.has(null) && servers.length === [...totals][0];
      return { servers, pages: last, complete };
    }
    // Neither last_page nor total_entries: follow next_page.
    let pages = 1;
    for (let next: number | null | undefined = pagination.next_page; next; ) {
      const body = await page(next);
      for (const x of body.servers) this.remember(x);
      servers.push(...body.servers);
      pages++;
      const following: number | null | undefined = body.meta?.pagination?.next_page;
      next = following && following > next ? following : null;
    }
    return { servers, pages, complete: false };
  }

  private async fetchActions(ids: number[]): Promise<Map<number, HetznerAction | Error>> {
    const out = new Map<number, HetznerAction | Error>();
    await Promise.all(
      chunks(ids, ACTION_IDS_PER_REQUEST).map(async (chunk) => {
        try {
          const body = await this.core.request<{ actions: HetznerAction[] }>({
            method: 'GET',
            path: '/actions',
            route: '/actions',
            idempotent: true,
            query: { id: chunk },
          });
          for (const action of body.actions) out.set(action.id, action);
          for (const id of chunk) {
            if (!out.has(id)) {
              out.set(
                id,
                new CloudApiError({
                  api: 'hetzner',
                  status: 404,
                  code: 'not_found',
                  message: `Hetzner action ${id} not found`,
                  retryable: false,
                  method: 'GET',
                  path: '/actions',
                }),
              );
            }
          }
        } catch (err) {
          for (const id of chunk) out.set(id, err as Error);
        }
      }),
    );
    return out;
  }

  private async fetchServers(ids: number[]): Promise<Map<number, HetznerServer | null | Error>> {
    const out = new Map<number, HetznerServer | null | Error>();
    // Servers whose identity is known are listed by it: a page of them per request, each answer
    // holding only servers asked for. One alone is read (the same one request, a smaller answer).
    const known = ids.filter((id) => this.identities.has(id));
    const rest = known.length > 1 ? ids.filter((id) => !this.identities.has(id)) : ids;
    const jobs: Array<Promise<void>> = known.length > 1 ? chunks(known, SERVERS_PER_PAGE).map((chunk) => this.listByIdentity(chunk, out)) : [];
    // One listing costs `managedListingPages` requests and answers for every waiting server. Up to
    // that many waiters, reading each server costs no more requests and far smaller answers (a
    // listing page carries 50 whole servers).
    if (rest.length > this.managedListingPages) jobs.push(this.listManaged(rest, out));
    else jobs.push(this.readEach(rest, out));
    await Promise.all(jobs);
    return out;
  }

  private async listManaged(ids: number[], out: Map<number, HetznerServer | null | Error>): Promise<void> {
    try {
      const { servers, pages } = await this.listServersWithPages(this.managedLabelSelector);
      this.managedListingPages = Math.max(1, pages);
      // The listing answers for every server it shows, also those whose waiters were not due yet.
      for (const server of servers) out.set(server.id, server);
      // Absent from the listing usually means deleted, but a server without the managed label
      // would be absent too: confirm those one by one (rare, so cheap).
      await this.readEach(ids.filter((id) => !out.has(id)), out);
    } catch (err) {
      for (const id of ids) out.set(id, err as Error);
    }
  }

  /** At most a page of servers by their identity label; one missing from the answer is read (deleted, or relabelled). */
  private async listByIdentity(ids: number[], out: Map<number, HetznerServer | null | Error>): Promise<void> {
    const values = ids.map((id) => this.identities.get(id)!);
    try {
      const { servers } = await this.listServersWithPages(`${this.managedLabelSelector},${this.identityLabel} in (${values.join(',')})`);
      for (const server of servers) out.set(server.id, server);
      await this.readEach(ids.filter((id) => !out.has(id)), out);
    } catch (err) {
      for (const id of ids) out.set(id, err as Error);
    }
  }

  /** Keeps the server's identity label for later status polls; returns the server. */
  private remember(server: HetznerServer): HetznerServer {
    const value = this.identityLabel ? server.labels?.[this.identityLabel] : undefined;
    if (value === undefined || !SELECTOR_SAFE_VALUE.test(value)) return server;
    this.identities.delete(server.id);
    this.identities.set(server.id, value);
    if (this.identities.size > IDENTITIES_KEPT) this.identities.delete(this.identities.keys().next().value!);
    return server;
  }

  private async readEach(ids: number[], out: Map<number, HetznerServer | null | Error>): Promise<void> {
    await Promise.all(
      ids.map(async (id) => {
        try {
          out.set(id, await this.getServer(id));
        } catch (err) {
          out.set(id, err as Error);
        }
      }),
    );
  }

  private serverNotFound(id: number, operation: string): CloudApiError {
    return new CloudApiError({
      api: 'hetzner',
      status: 404,
      code: 'not_found',
      message: `Hetzner server ${id} not found (${operation})`,
      retryable: false,
      method: 'GET',
      path: `/servers/${id}`,
    });
  }
}

/** `items` in runs of at most `size`. */
function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
