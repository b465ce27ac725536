import {
  DEFAULT_LOCATION,
  LOCATIONS,
  SYSTEM_IMAGES,
  datacenterOf,
  findDatacenterLocation,
  findLocation,
  findServerType,
  parseId,
  serverTypeArchitecture,
  serverTypeBody,
  serverTypeNames,
  serverTypeAvailability,
  serverTypeDisk,
  systemImageById,
  systemImageByName,
  type Architecture,
  type SystemImage,
} from './hetzner.catalog';
// The wire format only (types): the simulator shares no code with the client it stands in for.
import type { HetznerImage, HetznerPagination } from '../clients/hetzner/hetzner.types';
import type { SshKeyStore } from './hetzner.ssh-keys';
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
  /** The system image the server was created from; null when it was a snapshot (`fromImage`). */
  systemImage: SystemImage | null;
  userData: string | null;
  /** The `ssh_keys` of the create request, as given (ids or names, each naming a key that existed). */
  sshKeys: string[];
  /** Null when created with `public_net.enable_ipv4: false` (and likewise IPv6). */
  ipv4: string | null;
  ipv4Id: number | null;
  ipv6: string | null;
  ipv6Id: number | null;
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
  architecture: Architecture;
  osFlavor: string;
  osVersion: string | null;
  /** The tailnet device whose node state was on the disk when it was snapshotted (simulator-only). */
  deviceId: string | null;
}

/**
 * An image in the official shape (GET /images, a server's `image`): the wire format the client reads,
 * with every field the simulator fills in.
 */
export interface ImageBody extends HetznerImage {
  type: 'system' | 'snapshot';
  bound_to: null;
  os_flavor: string;
  os_version: string | null;
  rapid_deploy: boolean;
  protection: { delete: boolean };
  deprecated: null;
  deleted: null;
  labels: Record<string, string>;
  architecture: Architecture;
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

/** A POST /servers body once checked: every reference resolved to something that exists. */
export interface CreateServerInput {
  name: string;
  serverType: string;
  location: string;
  /** Exactly one of the two: a system image (by name or id) or a snapshot (by id). */
  systemImage: SystemImage | null;
  fromImage: ImageRecord | null;
  sshKeys: string[];
  userData: string | null;
  labels: Record<string, string>;
  startAfterCreate: boolean;
  enableIpv4: boolean;
  enableIpv6: boolean;
}

export interface HetznerHooks {
  onStatusChange(server: ServerRecord, from: ServerStatus, at: number): void;
  onDeleted(server: ServerRecord, at: number): void;
  /** The operating system restarts (a reboot it honoured, or a reset) while the server stays `running`. */
  onRestart(server: ServerRecord, at: number): void;
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

/** A listing's `meta.pagination`, as the client reads it. */
export type Pagination = HetznerPagination;

const POWER_COMMANDS: Record<PowerAction, ActionCommand> = {
  shutdown: 'shutdown_server',
  poweron: 'start_server',
  poweroff: 'stop_server',
  reboot: 'reboot_server',
  reset: 'reset_server',
};

const MAX_USER_DATA_BYTES = 32 * 1024;
export type FieldProblem = { name: string; messages: string[] };

/** 422 `invalid_input` naming every bad field, the first one in the message (the official example's shape). */
export function invalidInput(fields: FieldProblem[]): HetznerApiError {
  return new HetznerApiError(422, 'invalid_input', `invalid input in field '${fields[0].name}': ${fields[0].messages[0]}`, { fields });
}

/** A request body that must be a JSON object (anything else is Hetzner's 400 `json_error`). */
export function jsonObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HetznerApiError(400, 'json_error', 'request body must be a JSON object');
  }
  return body as Record<string, unknown>;
}

/** The API's answer to a reference to something that does not exist (seen from Hetzner: `details` is `{}`). */
function notFoundInput(message: string): HetznerApiError {
  return new HetznerApiError(422, 'invalid_input', message, {});
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LABEL_PREFIX = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;

/** The id and address counters of one simulator. */
export interface SimIdSequences {
  server: number;
  action: number;
  ip: number;
  image: number;
}

export function newIdSequences(): SimIdSequences {
  return { server: 4_711_001, action: 1, ip: 1, image: 310_000_001 };
}

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
  private readonly dcTypes = new Map<string, { supported: number[]; available: number[]; available_for_migration: number[] }>();
  // Ids and addresses are never reused within one simulator, even across reset(), so a stale id
  // held by a client from an earlier test can never hit a new server. Projects share the sequences:
  // Hetzner's ids are global, so an id of one project never names something in another.
  private readonly ids: SimIdSequences;

  constructor(
    private readonly deps: {
      scheduler: Scheduler;
      random: Random;
      timings: () => SimTimings;
      hooks: HetznerHooks;
      /** The project's SSH keys, which `ssh_keys` in a create must name. */
      sshKeys: SshKeyStore;
      /** Shared by every project of one simulator (default: sequences of this project's own). */
      ids?: SimIdSequences;
      /** Capacity refused right now beside the catalogue's own (a location or a type in a location sold out). */
      soldOut?: (serverType: string, location: string) => boolean;
      /** The project's server limit; null = none. */
      maxServers?: () => number | null;
    },
  ) {
    this.ids = deps.ids ?? newIdSequences();
  }

  reset(): void {
    for (const collection of [this.servers, this.actions, this.images, this.byName]) collection.clear();
  }

  // ---- validation --------------------------------------------------------------------------

  /**
   * Turns a POST /servers body into input, or throws what Hetzner answers: 422 `invalid_input` listing
   * every malformed field, then 422 `invalid_input` for the first reference to something that does not
   * exist (server type, location or data center, image, SSH key), then the placement's own refusals.
   * Nothing is created before all of it passes.
   */
  parseCreateBody(body: unknown): CreateServerInput {
    const b = jsonObject(body);
    const fields: FieldProblem[] = [];
    const bad = (name: string, message: string) => fields.push({ name, messages: [message] });
    const reference = (field: string, value: unknown, required: boolean): string | number | undefined => {
      if (value === undefined) {
        if (required) bad(field, 'Missing data for required field.');
      } else if ((typeof value === 'string' && value !== '') || typeof value === 'number') return value;
      else bad(field, 'must be an ID or a name');
      return undefined;
    };

    if (b.name === undefined) bad('name', 'Missing data for required field.');
    else if (typeof b.name !== 'string' || !HOSTNAME.test(b.name)) bad('name', 'must be a valid hostname (RFC 1123)');
    const serverTypeRef = reference('server_type', b.server_type, true);
    const imageRef = reference('image', b.image, true);
    if (b.location !== undefined && b.datacenter !== undefined) bad('location', 'must not be used together with datacenter');
    const locationRef = reference('location', b.location, false);
    const datacenterRef = reference('datacenter', b.datacenter, false);

    let sshKeyRefs: (string | number)[] = [];
    if (b.ssh_keys !== undefined) {
      if (!Array.isArray(b.ssh_keys) || !b.ssh_keys.every((k) => (typeof k === 'string' && k !== '') || typeof k === 'number')) {
        bad('ssh_keys', 'must be a list of SSH key IDs or names');
      } else sshKeyRefs = b.ssh_keys as (string | number)[];
    }
    if (b.user_data !== undefined && b.user_data !== null) {
      if (typeof b.user_data !== 'string') bad('user_data', 'must be a string');
      else if (Buffer.byteLength(b.user_data) > MAX_USER_DATA_BYTES) bad('user_data', 'is too long (max 32 KiB)');
    }
    if (b.start_after_create !== undefined && typeof b.start_after_create !== 'boolean') {
      bad('start_after_create', 'must be a boolean');
    }
    if (b.labels !== undefined) {
      const problem = labelsProblem(b.labels);
      if (problem) bad('labels', problem);
    }
    const publicNet = b.public_net === undefined ? {} : b.public_net;
    const net = (typeof publicNet === 'object' && publicNet !== null && !Array.isArray(publicNet) ? publicNet : {}) as Record<string, unknown>;
    if (net !== publicNet) bad('public_net', 'must be an object');
    for (const flag of ['enable_ipv4', 'enable_ipv6'] as const) {
      if (net[flag] !== undefined && typeof net[flag] !== 'boolean') bad(`public_net.${flag}`, 'must be a boolean');
    }
    const enableIpv4 = net.enable_ipv4 !== false;
    const enableIpv6 = net.enable_ipv6 !== false;
    // Without a public address or a private network the server could not be reached at all.
    if (!enableIpv4 && !enableIpv6 && !(Array.isArray(b.networks) && b.networks.length > 0)) {
      bad('public_net', 'a server needs a public IPv4, a public IPv6 or a network');
    }

    if (fields.length > 0) throw invalidInput(fields);

    const serverType = findServerType(serverTypeRef!);
    if (!serverType) throw notFoundInput('server type not found');
    let location = DEFAULT_LOCATION;
    if (locationRef !== undefined) {
      const found = findLocation(locationRef);
      if (!found) throw notFoundInput('location not found');
      location = found;
    } else if (datacenterRef !== undefined) {
      const found = findDatacenterLocation(datacenterRef);
      if (!found) throw notFoundInput('datacenter not found');
      location = found;
    }
    const { systemImage, fromImage } = this.findImage(imageRef!, serverType);
    for (const ref of sshKeyRefs) {
      if (!this.deps.sshKeys.find(ref)) throw notFoundInput(`SSH key '${ref}' not found`);
    }

    const availability = serverTypeAvailability(serverType, location);
    if (availability === 'unsupported') throw notFoundInput('unsupported location for server type');
    if (availability === 'sold_out' || this.deps.soldOut?.(serverType, location)) {
      throw new HetznerApiError(412, 'resource_unavailable', `server type ${serverType} is unavailable in location ${location}`);
    }
    if (fromImage) {
      if (fromImage.status !== 'available') throw notFoundInput(`image ${fromImage.id} is not available yet`);
      if (fromImage.diskSize > serverTypeDisk(serverType)) throw notFoundInput(`image ${fromImage.id} needs a disk of ${fromImage.diskSize} GB`);
    }

    return {
      name: b.name as string,
      serverType,
      location,
      systemImage,
      fromImage,
      sshKeys: sshKeyRefs.map(String),
      userData: (b.user_data as string | null | undefined) ?? null,
      labels: { ...((b.labels as Record<string, string> | undefined) ?? {}) },
      startAfterCreate: (b.start_after_create as boolean | undefined) ?? true,
      enableIpv4,
      enableIpv6,
    };
  }

  /**
   * The image a create names: a system image by name (the one for the server type's architecture) or
   * by id, or a snapshot by id. Snapshots have no name, so a name only ever means a system image.
   */
  private findImage(ref: string | number, serverType: string): { systemImage: SystemImage | null; fromImage: ImageRecord | null } {
    const architecture = serverTypeArchitecture(serverType);
    const byName = typeof ref === 'string' ? systemImageByName(ref, architecture) : undefined;
    if (byName) return { systemImage: byName, fromImage: null };
    const id = typeof ref === 'number' ? ref : parseId(ref);
    const systemImage = id === undefined ? undefined : systemImageById(id);
    const fromImage = id === undefined ? undefined : this.images.get(id);
    const found = systemImage ?? fromImage;
    if (!found) throw notFoundInput('image not found');
    if (found.architecture !== architecture) {
      throw notFoundInput(`image architecture ${found.architecture} does not match server type architecture ${architecture}`);
    }
    return { systemImage: systemImage ?? null, fromImage: fromImage ?? null };
  }

  // ---- catalogue ---------------------------------------------------------------------------

  listServerTypes(q: { name?: string; page?: string; perPage?: string }) {
    const names = serverTypeNames().filter((n) => q.name === undefined || n === q.name);
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
    const limit = this.deps.maxServers?.() ?? null;
    if (limit !== null && this.servers.size >= limit) {
      // The official example's body (error codes table of the spec): the project is at its limit.
      throw new HetznerApiError(403, 'resource_limit_exceeded', 'project limit exceeded', { limits: [{ name: 'project_limit' }] });
    }
    const server = this.insertServer(input, now, 'initializing');
    const t = this.deps.timings().actionDurationMs;
    const startAfterCreate = input.startAfterCreate;
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
        // As with shutdown, the action only reports that the ACPI signal was delivered: an OS that
        // ignores it (or a server that is off) does not restart, and the status stays as it was.
        return this.startAction(server, command, now, duration, {
          onSuccess: (at) => {
            if (server.status === 'running' && !server.ignoresAcpi) this.deps.hooks.onRestart(server, at);
          },
        });
      case 'reset':
        // Power cut and back on: a running server restarts whatever its OS does, one that is off starts.
        if (server.status === 'off') this.setStatus(server, 'starting', now);
        return this.startAction(server, command, now, duration, {
          onSuccess: (at) => {
            if (server.status === 'running') this.deps.hooks.onRestart(server, at);
            else this.setStatus(server, 'running', at);
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

  /** PUT /servers/{id}: a new name (unique, a hostname) and/or labels (replacing the old set). */
  updateServer(id: number, body: unknown): ServerRecord {
    const server = this.getServer(id);
    const b = jsonObject(body);
    const fields: FieldProblem[] = [];
    if (b.name !== undefined && (typeof b.name !== 'string' || !HOSTNAME.test(b.name))) {
      fields.push({ name: 'name', messages: ['must be a valid hostname (RFC 1123)'] });
    }
    refuseInvalid(b, fields);
    if (typeof b.name === 'string' && b.name !== server.name) {
      this.assertNameFree(b.name);
      this.byName.delete(server.name);
      server.name = b.name;
      this.byName.set(server.name, server);
    }
    server.labels = labelsAfter(b, server.labels);
    return server;
  }

  /**
   * POST /servers/{id}/actions/create_image. The server may be running (snapshotted live) or off;
   * the action takes a base time plus a time per GB of disk, and the image is `creating` until then.
   */
  createImage(serverId: number, body: unknown, now: number): { image: ImageRecord; action: ActionRecord } {
    const server = this.lockable(serverId);
    const b = body === undefined ? {} : jsonObject(body);
    const fields: FieldProblem[] = [];
    if (b.type !== undefined && b.type !== 'snapshot' && b.type !== 'backup') fields.push({ name: 'type', messages: ['must be snapshot or backup'] });
    if (b.description !== undefined && typeof b.description !== 'string') fields.push({ name: 'description', messages: ['must be a string'] });
    refuseInvalid(b, fields);
    if (b.type === 'backup') throw new HetznerApiError(422, 'invalid_input', 'backups are not enabled for this server');
    const disk = serverTypeDisk(server.serverType);
    const origin = server.fromImage ?? server.systemImage!;
    const image: ImageRecord = {
      id: this.ids.image++,
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
      osFlavor: origin.osFlavor,
      osVersion: origin.osVersion,
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

  /** GET /images/{id}: a snapshot, or one of the system images. */
  imageBodyById(id: number): ImageBody {
    const system = systemImageById(id);
    return system ? systemImageBody(system) : this.imageBody(this.getImage(id));
  }

  /** PUT /images/{id}: description, labels, and `type: snapshot` (a snapshot already is one). */
  updateImage(id: number, body: unknown): ImageRecord {
    const image = this.ownImage(id);
    const b = jsonObject(body);
    const fields: FieldProblem[] = [];
    if (b.description !== undefined && typeof b.description !== 'string') fields.push({ name: 'description', messages: ['must be a string'] });
    if (b.type !== undefined && b.type !== 'snapshot') fields.push({ name: 'type', messages: ['must be one of: snapshot'] });
    refuseInvalid(b, fields);
    if (typeof b.description === 'string') image.description = b.description;
    image.labels = labelsAfter(b, image.labels);
    return image;
  }

  deleteImage(id: number): void {
    // ownImage answers 404 for an unknown id and 422 for a system image.
    this.images.delete(this.ownImage(id).id);
  }

  /** GET /images: the system images and every snapshot, filtered like the real listing. */
  listImages(q: ImageQuery): { items: ImageBody[]; pagination: Pagination } {
    const predicate = labelFilter(this.selectors, q.labelSelector);
    const types = q.type && q.type.length > 0 ? new Set(q.type) : undefined;
    const statuses = q.status && q.status.length > 0 ? new Set(q.status) : undefined;
    let items = [...SYSTEM_IMAGES.map((i) => systemImageBody(i)), ...[...this.images.values()].map((i) => this.imageBody(i))];
    items = items.filter(
      (i) =>
        (!types || types.has(i.type)) &&
        (!statuses || statuses.has(i.status)) &&
        (q.name === undefined || i.name === q.name) &&
        (q.architecture === undefined || i.architecture === q.architecture) &&
        (!predicate || predicate(i.labels)),
    );
    return sortedPage(items, q, (i) => i.name ?? '');
  }

  /** A snapshot this project owns; Hetzner's own system images cannot be changed or deleted. */
  private ownImage(id: number): ImageRecord {
    if (systemImageById(id)) throw new HetznerApiError(422, 'unsupported_error', `image ${id} is a system image; only snapshots and backups can be changed`);
    return this.getImage(id);
  }

  imageBody(i: ImageRecord): ImageBody {
    return {
      id: i.id,
      type: i.type,
      status: i.status,
      name: null,
      description: i.description,
      image_size: i.status === 'available' ? i.imageSize : null,
      disk_size: i.diskSize,
      created: iso(i.createdAt),
      created_from: { ...i.createdFrom },
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
    const predicate = labelFilter(this.selectors, q.labelSelector);
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
    return sortedPage(items, q, (s) => s.name);
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
    return sortedPage(items, q, (a) => a.command);
  }

  // ---- response bodies ---------------------------------------------------------------------

  serverBody(s: ServerRecord) {
    const loc = LOCATIONS[s.location];
    const dc = datacenterOf(s.location);
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      created: iso(s.createdAt),
      public_net: {
        ipv4:
          s.ipv4 === null
            ? null
            : { id: s.ipv4Id!, ip: s.ipv4, blocked: false, dns_ptr: `static.${s.ipv4.split('.').reverse().join('.')}.clients.your-server.de` },
        ipv6: s.ipv6 === null ? null : { id: s.ipv6Id!, ip: s.ipv6, blocked: false, dns_ptr: [] as { ip: string; dns_ptr: string }[] },
        floating_ips: [] as number[],
        firewalls: [] as { id: number; status: string }[],
      },
      private_net: [] as unknown[],
      server_type: this.typeBody(s.serverType),
      datacenter: {
        id: dc.id,
        name: dc.name,
        description: `${loc.city} DC ${dc.number}`,
        location: loc,
        server_types: this.datacenterTypes(s.location),
      },
      location: loc,
      image: s.fromImage ? this.imageBody(s.fromImage) : systemImageBody(s.systemImage!),
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
    this.assertNameFree(input.name);
    let n = this.ids.ip++;
    let ipv4 = publicIpv4(n);
    while (ipv4 === undefined) ipv4 = publicIpv4((n = this.ids.ip++));
    const server: ServerRecord = {
      id: this.ids.server++,
      name: input.name,
      status,
      createdAt: now,
      labels: { ...input.labels },
      serverType: input.serverType,
      location: input.location,
      systemImage: input.systemImage,
      userData: input.userData,
      sshKeys: [...input.sshKeys],
      ipv4: input.enableIpv4 ? ipv4 : null,
      ipv4Id: input.enableIpv4 ? 50_000_000 + 2 * n : null,
      ipv6: input.enableIpv6 ? `2a01:4f8:c01${(n >> 16) & 0xf}:${(n & 0xffff).toString(16)}::/64` : null,
      ipv6Id: input.enableIpv6 ? 50_000_001 + 2 * n : null,
      ignoresAcpi: this.deps.random.next() < this.deps.timings().ignoreAcpiRate,
      actionIds: [],
      runningActions: new Set(),
      powerSeq: 0,
      failNextAction: null,
      fromImage: input.fromImage,
    };
    this.servers.set(server.id, server);
    this.byName.set(server.name, server);
    return server;
  }

  private assertNameFree(name: string): void {
    if (this.byName.has(name)) {
      throw new HetznerApiError(409, 'uniqueness_error', 'server name is already used', { fields: [{ name: 'name' }] });
    }
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
      id: this.ids.action++,
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

  /** A data center's `server_types`: ids of the types offered in its location, and of those not sold out. */
  private datacenterTypes(location: string) {
    let types = this.dcTypes.get(location);
    if (!types) {
      const offered = serverTypeNames().filter((n) => serverTypeAvailability(n, location) !== 'unsupported');
      const available = offered.filter((n) => serverTypeAvailability(n, location) === 'available').map((n) => this.typeBody(n).id);
      types = { supported: offered.map((n) => this.typeBody(n).id), available, available_for_migration: available };
      this.dcTypes.set(location, types);
    }
    return { supported: [...types.supported], available: [...types.available], available_for_migration: [...types.available] };
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

export { parseId };

/** 422 `invalid_input` for the problems of a body's fields, its `labels` (when it has them) checked too. */
export function refuseInvalid(b: Record<string, unknown>, fields: FieldProblem[]): void {
  const problem = b.labels === undefined ? undefined : labelsProblem(b.labels);
  if (problem) fields.push({ name: 'labels', messages: [problem] });
  if (fields.length > 0) throw invalidInput(fields);
}

/** The labels after a PUT body (its `labels` replace the old set; without them the old set stays). */
export function labelsAfter(b: Record<string, unknown>, current: Record<string, string>): Record<string, string> {
  return b.labels === undefined ? current : { ...(b.labels as Record<string, string>) };
}

export function labelsProblem(labels: unknown): string | undefined {
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

/** A system image as GET /images and a server's `image` show it. */
export function systemImageBody(i: SystemImage): ImageBody {
  return {
    id: i.id,
    type: 'system',
    status: 'available',
    name: i.name,
    description: i.description,
    image_size: null,
    disk_size: 5,
    created: i.created,
    created_from: null,
    bound_to: null,
    os_flavor: i.osFlavor,
    os_version: i.osVersion,
    rapid_deploy: true,
    protection: { delete: false },
    deprecated: null,
    deleted: null,
    labels: {},
    architecture: i.architecture,
  };
}

/** A listing's label_selector as a predicate (none when absent or empty); a malformed one is a 400 invalid_input. */
export function labelFilter(selectors: LabelSelectorCache, selector: string | undefined): ((labels: Record<string, string>) => boolean) | undefined {
  if (selector === undefined || selector === '') return undefined;
  try {
    return selectors.get(selector);
  } catch (err) {
    if (err instanceof LabelSelectorError) throw new HetznerApiError(400, 'invalid_input', err.message);
    throw err;
  }
}

/** Records are kept in id order already (ids only grow), so the default order costs nothing. */
export function sortRecords<T extends { id: number }>(items: T[], sort: string[] | undefined, name: (x: T) => string): void {
  if (!sort || sort.length === 0) return;
  const [field, dir = 'asc'] = sort[0].split(':');
  if (field === 'id' && dir === 'asc') return;
  const sign = dir === 'desc' ? -1 : 1;
  if (field === 'name') items.sort((a, b) => sign * name(a).localeCompare(name(b)) || a.id - b.id);
  else items.sort((a, b) => sign * (a.id - b.id));
}

/** A listing's page, after its `sort` (by id or by the name given). */
export function sortedPage<T extends { id: number }>(
  items: T[],
  q: { sort?: string[]; page?: string; perPage?: string },
  name: (x: T) => string,
): { items: T[]; pagination: Pagination } {
  sortRecords(items, q.sort, name);
  return paginate(items, q.page, q.perPage);
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
