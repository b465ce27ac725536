import {
  DATACENTER_NUMBERS,
  DEFAULT_LOCATION,
  LOCATIONS,
  SERVER_TYPE_NAME,
  SYSTEM_IMAGES,
  serverTypeArchitecture,
  serverTypeBody,
  catalogServerTypes,
  serverTypeAvailability,
  serverTypeDisk,
} from './hetzner.catalog';
import { LabelSelectorCache, LabelSelectorError } from './label-selector';
import type { Random } from './random';
import type { Scheduler } from './scheduler';
import type { ActionCommand, SimTimings } from './timings';

export const SERVER_STATUSES = [
  'initializing',
  'starting',
  'running',
  'stopping',
  'off',
  'deleting',
  'migrating',
  'rebuilding',
  'unknown',
] as const;
export type ServerStatus = (typeof SERVER_STATUSES)[number];
export type ActionStatus = 'running' | 'success' | 'error';
export type PowerAction = 'shutdown' | 'poweron' | 'poweroff' | 'reboot' | 'reset';

/** An error the Hetzner API would answer with: `{ error: { code, message, details } }`. */
export class HetznerApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

export interface ServerRecord {
  id: number;
  name: string;
  status: ServerStatus;
  createdAt: number;
  labels: Record<string, string>;
  serverType: string;
  location: string;
  image: string;
  userData: string | null;
  sshKeys: string[];
  ipv4: string;
  ipv4Id: number;
  ipv6: string;
  ipv6Id: number;
  ignoresAcpi: boolean;
  actionIds: number[];
  /** Ids of actions still running on this server; non-empty = locked. */
  runningActions: Set<number>;
  /** Bumped by every power change, so a pending ACPI shutdown from before is dropped. */
  powerSeq: number;
  /** Set through the control API: the next action on this server ends with status `error`. */
  failNextAction: string | null;
  /** The snapshot the server was created from, if any (its disk holds that snapshot's contents). */
  fromImage: ImageRecord | null;
}

export type ImageStatus = 'available' | 'creating' | 'unavailable';

export interface ImageRecord {
  id: number;
  type: 'snapshot';
  status: ImageStatus;
  description: string;
  labels: Record<string, string>;
  /** GB in storage, what a snapshot is billed by: known once the image is available. */
  imageSize: number;
  diskSize: number;
  createdAt: number;
  createdFrom: { id: number; name: string };
  architecture: 'x86' | 'arm';
  osFlavor: string;
  osVersion: string | null;
  /** The tailnet device whose node state was on the disk when it was snapshotted (simulator-only). */
  deviceId: string | null;
}

export interface ImageQuery {
  name?: string;
  labelSelector?: string;
  type?: string[];
  status?: string[];
  architecture?: string;
  sort?: string[];
  page?: string;
  perPage?: string;
}

export interface ActionRecord {
  id: number;
  command: ActionCommand;
  status: ActionStatus;
  startedAt: number;
  finishAt: number;
  finishedAt: number | null;
  serverId: number;
  /** The image a create_image action makes. */
  imageId?: number;
  error: { code: string; message: string } | null;
}

export interface CreateServerInput {
  name: string;
  serverType: string;
  image: string;
  location?: string;
  sshKeys?: string[];
  userData?: string | null;
  labels?: Record<string, string>;
  startAfterCreate?: boolean;
}

export interface HetznerHooks {
  onStatusChange(server: ServerRecord, from: ServerStatus, at: number): void;
  onDeleted(server: ServerRecord, at: number): void;
  /** The tailnet device whose state is on this server's disk, if any (copied into its snapshots). */
  deviceOnDisk(server: ServerRecord): string | null;
}

export interface ListQuery {
  name?: string;
  labelSelector?: string;
  status?: string[];
  sort?: string[];
  page?: string;
  perPage?: string;
}

export interface Pagination {
  page: number;
  per_page: number;
  previous_page: number | null;
  next_page: number | null;
  last_page: number | null;
  total_entries: number | null;
}

const POWER_COMMANDS: Record<PowerAction, ActionCommand> = {
  shutdown: 'shutdown_server',
  poweron: 'start_server',
  poweroff: 'stop_server',
  reboot: 'reboot_server',
  reset: 'reset_server',
};

const MAX_USER_DATA_BYTES = 32 * 1024;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LABEL_PREFIX = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export class HetznerCloud {
  readonly servers = new Map<number, ServerRecord>();
  readonly actions = new Map<number, ActionRecord>();
  readonly images = new Map<number, ImageRecord>();
  private readonly byName = new Map<string, ServerRecord>();
  private readonly selectors = new LabelSelectorCache();
  private readonly typeBodies = new Map<string, ReturnType<typeof serverTypeBody>>();
  // Ids and addresses are never reused within one simulator, even across reset(), so a stale id
  // held by a client from an earlier test can never hit a new server.
  private nextServerId = 4_711_001;
  private nextActionId = 1;
  private nextIp = 1;
  private nextImageId = 310_000_001;

  constructor(
    private readonly deps: {
      scheduler: Scheduler;
      random: Random;
      timings: () => SimTimings;
      hooks: HetznerHooks;
    },
  ) {}

  reset(): void {
    this.servers.clear();
    this.actions.clear();
    this.images.clear();
    this.byName.clear();
  }

  // ---- validation --------------------------------------------------------------------------

  /** Turns a POST /servers body into input, or throws 422 invalid_input listing every bad field. */
  parseCreateBody(body: unknown): CreateServerInput {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new HetznerApiError(400, 'json_error', 'request body must be a JSON object');
    }
    const b = body as Record<string, unknown>;
    const fields: { name: string; messages: string[] }[] = [];
    const bad = (name: string, message: string) => fields.push({ name, messages: [message] });

    if (b.name === undefined) bad('name', 'Missing data for required field.');
    else if (typeof b.name !== 'string' || !HOSTNAME.test(b.name)) bad('name', 'must be a valid hostname (RFC 1123)');
    const serverType = typeof b.server_type === 'number' ? String(b.server_type) : b.server_type;
    if (serverType === undefined) bad('server_type', 'Missing data for required field.');
    else if (typeof serverType !== 'string' || !SERVER_TYPE_NAME.test(serverType)) bad('server_type', 'server type not found');
    const image = typeof b.image === 'number' ? String(b.image) : b.image;
    if (image === undefined) bad('image', 'Missing data for required field.');
    else if (typeof image !== 'string' || image.length === 0) bad('image', 'image not found');

    let location: string | undefined;
    if (b.location !== undefined && b.datacenter !== undefined) {
      bad('location', 'must not be used together with datacenter');
    } else if (b.location !== undefined) {
      if (typeof b.location !== 'string' || !LOCATIONS[b.location]) bad('location', 'location not found');
      else location = b.location;
    } else if (b.datacenter !== undefined) {
      const loc = typeof b.datacenter === 'string' ? b.datacenter.split('-dc')[0] : undefined;
      if (!loc || !LOCATIONS[loc]) bad('datacenter', 'datacenter not found');
      else location = loc;
    }

    let sshKeys: string[] | undefined;
    if (b.ssh_keys !== undefined) {
      if (!Array.isArray(b.ssh_keys) || !b.ssh_keys.every((k) => typeof k === 'string' || typeof k === 'number')) {
        bad('ssh_keys', 'must be a list of SSH key ids or names');
      } else sshKeys = b.ssh_keys.map(String);
    }
    if (b.user_data !== undefined && b.user_data !== null) {
      if (typeof b.user_data !== 'string') bad('user_data', 'must be a string');
      else if (Buffer.byteLength(b.user_data) > MAX_USER_DATA_BYTES) bad('user_data', 'is too long (max 32 KiB)');
    }
    if (b.start_after_create !== undefined && typeof b.start_after_create !== 'boolean') {
      bad('start_after_create', 'must be a boolean');
    }
    let labels: Record<string, string> | undefined;
    if (b.labels !== undefined) {
      const problem = labelsProblem(b.labels);
      if (problem) bad('labels', problem);
      else labels = b.labels as Record<string, string>;
    }

    if (location && typeof serverType === 'string') {
      const availability = serverTypeAvailability(serverType, location);
      if (availability === 'unsupported') bad('server_type', `server type ${serverType} is not supported in location ${location}`);
      if (availability === 'sold_out') {
        throw new HetznerApiError(412, 'resource_unavailable', `server type ${serverType} is unavailable in location ${location}`);
      }
    }

    if (fields.length > 0) {
      const first = fields[0];
      throw new HetznerApiError(422, 'invalid_input', `invalid input in field '${first.name}': ${first.messages[0]}`, {
        fields,
      });
    }
    return {
      name: b.name as string,
      serverType: serverType as string,
      image: image as string,
      location,
      sshKeys,
      userData: (b.user_data as string | null | undefined) ?? null,
      labels,
      startAfterCreate: b.start_after_create as boolean | undefined,
    };
  }

  // ---- catalogue ---------------------------------------------------------------------------

  listServerTypes(q: { name?: string; page?: string; perPage?: string }) {
    const names = catalogServerTypes().filter((n) => q.name === undefined || n === q.name);
    const { items, pagination } = paginate(names, q.page, q.perPage);
    return { items: items.map((n) => this.typeBody(n)), pagination };
  }

  listLocations(q: { name?: string; page?: string; perPage?: string }) {
    const all = Object.values(LOCATIONS).filter((l) => q.name === undefined || l.name === q.name);
    return paginate(all, q.page, q.perPage);
  }

  // ---- mutations ---------------------------------------------------------------------------

  createServer(
    input: CreateServerInput,
    now: number,
  ): { server: ServerRecord; action: ActionRecord; nextActions: ActionRecord[] } {
    const server = this.insertServer(input, now, 'initializing');
    const t = this.deps.timings().actionDurationMs;
    const startAfterCreate = input.startAfterCreate ?? true;
    const action = this.startAction(server, 'create_server', now, t.create_server, {
      onSuccess: (at) => this.setStatus(server, startAfterCreate ? 'starting' : 'off', at),
      onError: (at) => this.setStatus(server, 'off', at),
    });
    const nextActions: ActionRecord[] = [];
    if (startAfterCreate) {
      // Started together with create_server (as Hetzner reports it) but it can only finish after it.
      nextActions.push(
        this.startAction(server, 'start_server', now, t.create_server + t.start_server, {
          onSuccess: (at) => this.setStatus(server, 'running', at),
          onError: (at) => this.setStatus(server, 'off', at),
        }),
      );
    }
    return { server, action, nextActions };
  }

  /** A server created behind the client's back: no actions, straight into `status`. */
  createServerDirect(
    input: CreateServerInput & { status?: ServerStatus; ignoresAcpi?: boolean },
    now: number,
  ): ServerRecord {
    const server = this.insertServer(input, now, 'initializing');
    if (input.ignoresAcpi !== undefined) server.ignoresAcpi = input.ignoresAcpi;
    this.setStatus(server, input.status ?? 'running', now);
    return server;
  }

  powerAction(id: number, kind: PowerAction, now: number): ActionRecord {
    const server = this.lockable(id);
    const t = this.deps.timings();
    const command = POWER_COMMANDS[kind];
    const duration = t.actionDurationMs[command];
    switch (kind) {
      case 'shutdown':
        // The action only reports that the ACPI signal was delivered; whether the OS reacts is up to it.
        return this.startAction(server, command, now, duration, {
          onSuccess: (at) => {
            if (server.status !== 'running' || server.ignoresAcpi) return;
            this.setStatus(server, 'stopping', at);
            const seq = server.powerSeq;
            this.deps.scheduler.schedule(at + t.shutdownMs, (offAt) => {
              if (this.alive(server) && server.powerSeq === seq && server.status === 'stopping') {
                this.setStatus(server, 'off', offAt);
              }
            });
          },
        });
      case 'poweroff':
        return this.startAction(server, command, now, duration, {
          onSuccess: (at) => this.setStatus(server, 'off', at),
        });
      case 'poweron': {
        if (server.status === 'off') this.setStatus(server, 'starting', now);
        return this.startAction(server, command, now, duration, {
          onSuccess: (at) => this.setStatus(server, 'running', at),
        });
      }
      case 'reboot':
      case 'reset':
        return this.startAction(server, command, now, duration, {
          onSuccess: (at) => {
            if (kind === 'reset' || server.status === 'running') this.setStatus(server, 'running', at);
          },
        });
    }
  }

  deleteServer(id: number, now: number): ActionRecord {
    const server = this.lockable(id);
    this.setStatus(server, 'deleting', now);
    return this.startAction(server, 'delete_server', now, this.deps.timings().actionDurationMs.delete_server, {
      onSuccess: (at) => this.removeServer(server, at),
    });
  }

  /** Control API: removes a server at once, as if it were deleted in the console. */
  removeServerDirect(id: number, now: number): boolean {
    const server = this.servers.get(id);
    if (!server) return false;
    this.removeServer(server, now);
    return true;
  }

  /** Control API: changes status (e.g. `off` behind the client's back) or the server's quirks. */
  patchServer(
    id: number,
    patch: { status?: ServerStatus; ignoresAcpi?: boolean; labels?: Record<string, string>; failNextAction?: string | boolean },
    now: number,
  ): ServerRecord | undefined {
    const server = this.servers.get(id);
    if (!server) return undefined;
    if (patch.labels) {
      const problem = labelsProblem(patch.labels);
      if (problem) throw new HetznerApiError(422, 'invalid_input', `invalid input in field 'labels': ${problem}`);
      server.labels = { ...patch.labels };
    }
    if (patch.ignoresAcpi !== undefined) server.ignoresAcpi = patch.ignoresAcpi;
    if (patch.failNextAction !== undefined) {
      server.failNextAction =
        patch.failNextAction === false ? null : patch.failNextAction === true ? 'Action failed' : patch.failNextAction;
    }
    if (patch.status !== undefined && patch.status !== server.status) this.setStatus(server, patch.status, now);
    return server;
  }

  /**
   * POST /servers/{id}/actions/create_image. The server may be running (snapshotted live) or off;
   * the action takes a base time plus a time per GB of disk, and the image is `creating` until then.
   */
  createImage(serverId: number, body: unknown, now: number): { image: ImageRecord; action: ActionRecord } {
    const server = this.lockable(serverId);
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b !== 'object' || Array.isArray(b)) throw new HetznerApiError(400, 'json_error', 'request body must be a JSON object');
    const fields: { name: string; messages: string[] }[] = [];
    if (b.type !== undefined && b.type !== 'snapshot' && b.type !== 'backup') fields.push({ name: 'type', messages: ['must be snapshot or backup'] });
    if (b.description !== undefined && typeof b.description !== 'string') fields.push({ name: 'description', messages: ['must be a string'] });
    if (b.labels !== undefined) {
      const problem = labelsProblem(b.labels);
      if (problem) fields.push({ name: 'labels', messages: [problem] });
    }
    if (fields.length > 0) {
      throw new HetznerApiError(422, 'invalid_input', `invalid input in field '${fields[0].name}': ${fields[0].messages[0]}`, { fields });
    }
    if (b.type === 'backup') throw new HetznerApiError(422, 'invalid_input', 'backups are not enabled for this server');
    const disk = serverTypeDisk(server.serverType);
    const [osFlavor, osVersion] = server.fromImage ? [server.fromImage.osFlavor, server.fromImage.osVersion] : imageFlavor(server.image);
    const image: ImageRecord = {
      id: this.nextImageId++,
      type: 'snapshot',
      status: 'creating',
      description: typeof b.description === 'string' ? b.description : `${server.name}-${new Date(now).toISOString()}`,
      labels: { ...((b.labels as Record<string, string> | undefined) ?? {}) },
      // What the used part of a small server's disk compresses to: a few GB.
      imageSize: Math.round((1.5 + this.deps.random.next() * 2.5) * 100) / 100,
      diskSize: disk,
      createdAt: now,
      createdFrom: { id: server.id, name: server.name },
      architecture: serverTypeArchitecture(server.serverType),
      osFlavor,
      osVersion,
      deviceId: this.deps.hooks.deviceOnDisk(server),
    };
    this.images.set(image.id, image);
    const t = this.deps.timings();
    const action = this.startAction(server, 'create_image', now, t.actionDurationMs.create_image + disk * t.imageMsPerGb, {
      onSuccess: () => {
        if (this.images.get(image.id) === image) image.status = 'available';
      },
      onError: () => {
        this.images.delete(image.id);
      },
    });
    action.imageId = image.id;
    return { image, action };
  }

  getImage(id: number): ImageRecord {
    const image = this.images.get(id);
    if (!image) throw new HetznerApiError(404, 'not_found', `image with ID '${id}' not found`);
    return image;
  }

  deleteImage(id: number): void {
    this.getImage(id);
    this.images.delete(id);
  }

  /** GET /images: the system images and every snapshot, filtered like the real listing. */
  listImages(q: ImageQuery): { items: ReturnType<HetznerCloud['imageBody']>[]; pagination: Pagination } {
    const predicate = this.labelPredicate(q.labelSelector);
    const types = q.type && q.type.length > 0 ? new Set(q.type) : undefined;
    const statuses = q.status && q.status.length > 0 ? new Set(q.status) : undefined;
    let items = [...SYSTEM_IMAGES.map((i) => systemImageBody(i.name)), ...[...this.images.values()].map((i) => this.imageBody(i))];
    items = items.filter(
      (i) =>
        (!types || types.has(i.type)) &&
        (!statuses || statuses.has(i.status)) &&
        (q.name === undefined || i.name === q.name) &&
        (q.architecture === undefined || i.architecture === q.architecture) &&
        (!predicate || predicate(i.labels)),
    );
    sortRecords(items, q.sort, (i) => i.name ?? '');
    return paginate(items, q.page, q.perPage);
  }

  imageBody(i: ImageRecord) {
    return {
      id: i.id,
      type: i.type as 'system' | 'snapshot',
      status: i.status,
      name: null as string | null,
      description: i.description,
      image_size: i.status === 'available' ? i.imageSize : null,
      disk_size: i.diskSize,
      created: iso(i.createdAt),
      created_from: { ...i.createdFrom } as { id: number; name: string } | null,
      bound_to: null,
      os_flavor: i.osFlavor,
      os_version: i.osVersion,
      rapid_deploy: false,
      protection: { delete: false },
      deprecated: null,
      deleted: null,
      labels: { ...i.labels },
      architecture: i.architecture,
    };
  }

  // ---- queries -----------------------------------------------------------------------------

  /** A listing's label_selector as a predicate (none when absent or empty); a malformed one is a 400 invalid_input. */
  private labelPredicate(selector: string | undefined): ((labels: Record<string, string>) => boolean) | undefined {
    if (selector === undefined || selector === '') return undefined;
    try {
      return this.selectors.get(selector);
    } catch (err) {
      if (err instanceof LabelSelectorError) throw new HetznerApiError(400, 'invalid_input', err.message);
      throw err;
    }
  }

  getServer(id: number): ServerRecord {
    const server = this.servers.get(id);
    if (!server) throw new HetznerApiError(404, 'not_found', `server with ID '${id}' not found`);
    return server;
  }

  getAction(id: number, serverId?: number): ActionRecord {
    const action = this.actions.get(id);
    if (!action || (serverId !== undefined && action.serverId !== serverId)) {
      throw new HetznerApiError(404, 'not_found', `action with ID '${id}' not found`);
    }
    return action;
  }

  listServers(q: ListQuery): { items: ServerRecord[]; pagination: Pagination } {
    const predicate = this.labelPredicate(q.labelSelector);
    const statuses = q.status && q.status.length > 0 ? new Set(q.status) : undefined;
    let items: ServerRecord[];
    if (q.name !== undefined) {
      const s = this.byName.get(q.name);
      items = s ? [s] : [];
    } else {
      items = [...this.servers.values()];
    }
    if (predicate || statuses) {
      items = items.filter((s) => (!statuses || statuses.has(s.status)) && (!predicate || predicate(s.labels)));
    }
    sortRecords(items, q.sort, (s) => s.name);
    return paginate(items, q.page, q.perPage);
  }

  listActions(
    q: { ids: string[]; status?: string[]; sort?: string[]; page?: string; perPage?: string },
    serverId?: number,
  ): { items: ActionRecord[]; pagination: Pagination } {
    let items: ActionRecord[] = [];
    if (serverId !== undefined) {
      for (const id of this.getServer(serverId).actionIds) items.push(this.actions.get(id) as ActionRecord);
    } else {
      if (q.ids.length === 0) {
        throw new HetznerApiError(400, 'invalid_input', "invalid input in field 'id': Missing data for required field.");
      }
      const seen = new Set<number>();
      for (const raw of q.ids) {
        const id = parseId(raw);
        if (id === undefined) throw new HetznerApiError(400, 'invalid_input', `invalid input in field 'id': ${raw}`);
        const a = this.actions.get(id);
        if (a && !seen.has(id)) {
          seen.add(id);
          items.push(a);
        }
      }
    }
    if (q.status && q.status.length > 0) {
      const statuses = new Set(q.status);
      items = items.filter((a) => statuses.has(a.status));
    }
    sortRecords(items, q.sort, (a) => a.command);
    return paginate(items, q.page, q.perPage);
  }

  // ---- response bodies ---------------------------------------------------------------------

  serverBody(s: ServerRecord) {
    const loc = LOCATIONS[s.location];
    const dc = DATACENTER_NUMBERS[s.location] ?? 1;
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      created: iso(s.createdAt),
      public_net: {
        ipv4: { id: s.ipv4Id, ip: s.ipv4, blocked: false, dns_ptr: `static.${s.ipv4.split('.').reverse().join('.')}.clients.your-server.de` },
        ipv6: { id: s.ipv6Id, ip: s.ipv6, blocked: false, dns_ptr: [] as { ip: string; dns_ptr: string }[] },
        floating_ips: [] as number[],
        firewalls: [] as { id: number; status: string }[],
      },
      private_net: [] as unknown[],
      server_type: this.typeBody(s.serverType),
      datacenter: {
        id: loc.id * 10 + dc,
        name: `${loc.name}-dc${dc}`,
        description: `${loc.city} DC ${dc}`,
        location: loc,
        server_types: { supported: [104, 105, 106], available: [104, 105, 106], available_for_migration: [104, 105, 106] },
      },
      location: loc,
      image: s.fromImage ? this.imageBody(s.fromImage) : { ...systemImageBody(s.image), architecture: serverTypeArchitecture(s.serverType) },
      iso: null,
      rescue_enabled: false,
      locked: s.runningActions.size > 0,
      backup_window: null,
      outgoing_traffic: 0,
      ingoing_traffic: 0,
      included_traffic: 21990232555520,
      protection: { delete: false, rebuild: false },
      labels: { ...s.labels },
      volumes: [] as number[],
      load_balancers: [] as number[],
      primary_disk_size: serverTypeDisk(s.serverType),
      placement_group: null,
    };
  }

  actionBody(a: ActionRecord, now: number) {
    const progress =
      a.status === 'running'
        ? Math.min(99, Math.max(0, Math.floor(((now - a.startedAt) / Math.max(1, a.finishAt - a.startedAt)) * 100)))
        : 100;
    return {
      id: a.id,
      command: a.command,
      status: a.status,
      progress,
      started: iso(a.startedAt),
      finished: a.finishedAt === null ? null : iso(a.finishedAt),
      resources: [{ id: a.serverId, type: 'server' }, ...(a.imageId !== undefined ? [{ id: a.imageId, type: 'image' }] : [])],
      error: a.error,
    };
  }

  // ---- internals ---------------------------------------------------------------------------

  private insertServer(input: CreateServerInput, now: number, status: ServerStatus): ServerRecord {
    if (this.byName.has(input.name)) {
      throw new HetznerApiError(409, 'uniqueness_error', 'server name is already used', { fields: [{ name: 'name' }] });
    }
    // An image given by id must be one of ours: a snapshot that is available and fits the disk.
    let fromImage: ImageRecord | null = null;
    if (/^[0-9]+$/.test(input.image)) {
      const found = this.images.get(Number(input.image));
      const system = SYSTEM_IMAGES.find((i) => imageId(i.name) === Number(input.image));
      if (!found && !system) throw new HetznerApiError(422, 'invalid_input', "invalid input in field 'image': image not found");
      if (found) {
        if (found.status !== 'available') throw new HetznerApiError(422, 'invalid_input', `image ${found.id} is not available yet`);
        if (found.diskSize > serverTypeDisk(input.serverType)) {
          throw new HetznerApiError(422, 'invalid_input', `image ${found.id} needs a disk of ${found.diskSize} GB`);
        }
        if (found.architecture !== serverTypeArchitecture(input.serverType)) {
          throw new HetznerApiError(422, 'invalid_input', `image ${found.id} is for ${found.architecture}`);
        }
        fromImage = found;
      }
    }
    let n = this.nextIp++;
    let ipv4 = publicIpv4(n);
    while (ipv4 === undefined) ipv4 = publicIpv4((n = this.nextIp++));
    const server: ServerRecord = {
      id: this.nextServerId++,
      name: input.name,
      status,
      createdAt: now,
      labels: { ...(input.labels ?? {}) },
      serverType: input.serverType,
      location: input.location ?? DEFAULT_LOCATION,
      image: input.image,
      userData: input.userData ?? null,
      sshKeys: input.sshKeys ?? [],
      ipv4,
      ipv4Id: 50_000_000 + 2 * n,
      ipv6: `2a01:4f8:c01${(n >> 16) & 0xf}:${(n & 0xffff).toString(16)}::/64`,
      ipv6Id: 50_000_001 + 2 * n,
      ignoresAcpi: this.deps.random.next() < this.deps.timings().ignoreAcpiRate,
      actionIds: [],
      runningActions: new Set(),
      powerSeq: 0,
      failNextAction: null,
      fromImage,
    };
    this.servers.set(server.id, server);
    this.byName.set(server.name, server);
    return server;
  }

  /** The server, if it exists and no action runs on it (Hetzner answers 423 `locked` otherwise). */
  private lockable(id: number): ServerRecord {
    const server = this.getServer(id);
    if (server.runningActions.size > 0) {
      const running = [...server.runningActions].map((a) => this.actions.get(a)?.command).join(', ');
      throw new HetznerApiError(423, 'locked', `server ${id} is locked: action ${running} is still running`);
    }
    return server;
  }

  private startAction(
    server: ServerRecord,
    command: ActionCommand,
    now: number,
    durationMs: number,
    effects: { onSuccess: (at: number) => void; onError?: (at: number) => void },
  ): ActionRecord {
    const action: ActionRecord = {
      id: this.nextActionId++,
      command,
      status: 'running',
      startedAt: now,
      finishAt: now + durationMs,
      finishedAt: null,
      serverId: server.id,
      error: null,
    };
    const failure = server.failNextAction;
    server.failNextAction = null;
    const statusBefore = server.status;
    this.actions.set(action.id, action);
    server.actionIds.push(action.id);
    server.runningActions.add(action.id);
    this.deps.scheduler.schedule(action.finishAt, (at) => {
      server.runningActions.delete(action.id);
      action.finishedAt = at;
      if (failure !== null) {
        action.status = 'error';
        action.error = { code: 'action_failed', message: failure };
        if (this.alive(server)) {
          if (effects.onError) effects.onError(at);
          else if (server.status !== statusBefore) this.setStatus(server, statusBefore, at);
        }
        return;
      }
      action.status = 'success';
      if (this.alive(server)) effects.onSuccess(at);
    });
    return action;
  }

  private setStatus(server: ServerRecord, status: ServerStatus, at: number): void {
    const from = server.status;
    if (from === status) return;
    server.status = status;
    server.powerSeq++;
    this.deps.hooks.onStatusChange(server, from, at);
  }

  private removeServer(server: ServerRecord, at: number): void {
    this.servers.delete(server.id);
    if (this.byName.get(server.name) === server) this.byName.delete(server.name);
    server.powerSeq++;
    this.deps.hooks.onDeleted(server, at);
  }

  private alive(server: ServerRecord): boolean {
    return this.servers.get(server.id) === server;
  }

  private typeBody(name: string) {
    let body = this.typeBodies.get(name);
    if (!body) {
      body = serverTypeBody(name);
      this.typeBodies.set(name, body);
    }
    return body;
  }
}

export function parseId(raw: string): number | undefined {
  if (!/^[1-9][0-9]{0,15}$/.test(raw)) return undefined;
  return Number(raw);
}

function labelsProblem(labels: unknown): string | undefined {
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) return 'must be an object';
  for (const [key, value] of Object.entries(labels)) {
    if (typeof value !== 'string') return `value of '${key}' must be a string`;
    const slash = key.lastIndexOf('/');
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (prefix !== undefined && !LABEL_PREFIX.test(prefix)) return `invalid label key '${key}'`;
    if (prefix === 'hetzner.cloud') return `label key prefix 'hetzner.cloud/' is reserved`;
    if (!LABEL_NAME.test(name)) return `invalid label key '${key}'`;
    if (value !== '' && !LABEL_NAME.test(value)) return `invalid label value '${value}' for key '${key}'`;
  }
  return undefined;
}

/** Spreads a counter over 49.12.0.0/12 (odd multiplier = bijection) so neighbours look unrelated. */
function publicIpv4(n: number): string | undefined {
  const v = (n * 0x9e3b5) & 0xfffff;
  const last = v & 0xff;
  return last === 0 || last === 255 ? undefined : `49.${12 + (v >> 16)}.${(v >> 8) & 0xff}.${last}`;
}

function imageFlavor(image: string): [string, string | null] {
  const m = /^(ubuntu|debian|fedora|centos|rocky|alma)-(.+)$/.exec(image);
  return m ? [m[1], m[2]] : ['unknown', null];
}

function imageId(image: string): number {
  let h = 0;
  for (let i = 0; i < image.length; i++) h = (h * 31 + image.charCodeAt(i)) >>> 0;
  return 100_000 + (h % 100_000);
}

/** A system image as GET /images and a server's `image` show it. */
export function systemImageBody(name: string) {
  const [os, version] = imageFlavor(name);
  return {
    id: imageId(name),
    type: 'system' as 'system' | 'snapshot',
    status: 'available' as ImageStatus,
    name: name as string | null,
    description: name,
    image_size: null as number | null,
    disk_size: 5,
    created: '2024-04-25T00:00:00Z',
    created_from: null as { id: number; name: string } | null,
    bound_to: null,
    os_flavor: os,
    os_version: version,
    rapid_deploy: true,
    protection: { delete: false },
    deprecated: null,
    deleted: null,
    labels: {} as Record<string, string>,
    architecture: (name.includes('arm') ? 'arm' : 'x86') as 'x86' | 'arm',
  };
}

/** Records are kept in id order already (ids only grow), so the default order costs nothing. */
function sortRecords<T extends { id: number }>(items: T[], sort: string[] | undefined, name: (x: T) => string): void {
  if (!sort || sort.length === 0) return;
  const [field, dir = 'asc'] = sort[0].split(':');
  if (field === 'id' && dir === 'asc') return;
  const sign = dir === 'desc' ? -1 : 1;
  if (field === 'name') items.sort((a, b) => sign * name(a).localeCompare(name(b)) || a.id - b.id);
  else items.sort((a, b) => sign * (a.id - b.id));
}

export function paginate<T>(all: T[], pageRaw?: string, perPageRaw?: string): { items: T[]; pagination: Pagination } {
  const page = pageRaw === undefined ? 1 : Number(pageRaw);
  const perPageAsked = perPageRaw === undefined ? 25 : Number(perPageRaw);
  if (!Number.isInteger(page) || page < 1) {
    throw new HetznerApiError(400, 'invalid_input', "invalid input in field 'page': must be a positive integer");
  }
  if (!Number.isInteger(perPageAsked) || perPageAsked < 1) {
    throw new HetznerApiError(400, 'invalid_input', "invalid input in field 'per_page': must be a positive integer");
  }
  const perPage = Math.min(50, perPageAsked);
  const total = all.length;
  const lastPage = Math.max(1, Math.ceil(total / perPage));
  return {
    items: all.slice((page - 1) * perPage, page * perPage),
    pagination: {
      page,
      per_page: perPage,
      previous_page: page > 1 ? page - 1 : null,
      next_page: page < lastPage ? page + 1 : null,
      last_page: lastPage,
      total_entries: total,
    },
  };
}
