import { resolveCredentials, type SimCredentials, type SimCredentialsInput } from './credentials';
import { FaultInjector, type SimFaultRule, type SimFaults } from './faults';
import { LOCATIONS, serverTypeNames } from './hetzner.catalog';
import {
  HetznerApiError,
  HetznerCloud,
  SERVER_STATUSES,
  iso,
  newIdSequences,
  type ServerRecord,
  type ServerStatus,
} from './hetzner.model';
import { SshKeyStore, type SimSshKeyInput } from './hetzner.ssh-keys';
import { Random } from './random';
import { RateLimiter } from './rate-limiter';
import { Scheduler } from './scheduler';
import { TailscaleApiError, Tailnet } from './tailnet.model';
import { DEFAULT_TIMINGS, SimInputError, cloneTimings, mergeTimings, type SimTimings, type SimTimingsInput } from './timings';
import { firstBoot, type TailscaleUp } from './user-data';

export type HetznerServerBody = ReturnType<HetznerCloud['serverBody']>;
export type HetznerActionBody = ReturnType<HetznerCloud['actionBody']>;
export type HetznerImageBody = ReturnType<HetznerCloud['imageBody']>;
export type HetznerSshKeyBody = ReturnType<SshKeyStore['body']>;
export type TailscaleDeviceBody = ReturnType<Tailnet['deviceBody']>;
export type TailscaleKeyBody = ReturnType<Tailnet['keyBody']>;

export type EnrollmentState = 'none' | 'waiting' | 'scheduled' | 'enrolled' | 'failed';

export interface SimServerState extends HetznerServerBody {
  /** Simulator-only facts, not part of the Hetzner shape. */
  _sim: {
    ignoresAcpi: boolean;
    failNextAction: string | null;
    enrollment: { state: EnrollmentState; hostname?: string; error?: string; deviceId?: string };
    /** What the create request carried that Hetzner does not show again. */
    sshKeys: string[];
    userData: string | null;
    /** The Hetzner project the server is in. */
    project: string;
  };
}

/** A Hetzner project of the simulator: its own servers, snapshots, SSH keys and server limit. */
export interface SimProject {
  name: string;
  /** The API tokens of the project (each with its own rate budget, as on Hetzner). */
  tokens: string[];
  hetzner: HetznerCloud;
  sshKeys: SshKeyStore;
  /** Servers the project may have at once; null = no limit. */
  maxServers: number | null;
}

export interface SimProjectInput {
  name: string;
  token: string;
  maxServers?: number | null;
}

export interface SimProjectView {
  name: string;
  servers: number;
  snapshots: number;
  maxServers: number | null;
  /** Hetzner API requests answered for this project's tokens, by route (reset with the other counts). */
  requests: Record<string, number>;
}

export interface SimAuthKeyState extends TailscaleKeyBody {
  used: boolean;
  uses: number;
  usedAt: string | null;
}

export interface SimState {
  now: string;
  /** Places refused as sold out right now: `fsn1` or `cx22@fsn1`. */
  soldOut: string[];
  servers: SimServerState[];
  actions: HetznerActionBody[];
  /** Snapshots (system images are not listed here). */
  images: HetznerImageBody[];
  sshKeys: HetznerSshKeyBody[];
  devices: TailscaleDeviceBody[];
  authKeys: SimAuthKeyState[];
}

export interface SimServerInput {
  name?: string;
  labels?: Record<string, string>;
  status?: ServerStatus;
  server_type?: string;
  image?: string;
  location?: string;
  user_data?: string;
  ignoresAcpi?: boolean;
  /** The project to create it in (default: the first). */
  project?: string;
}

export interface SimServerPatch {
  status?: ServerStatus;
  ignoresAcpi?: boolean;
  labels?: Record<string, string>;
  /** The next action on this server ends with status `error` (a string = its error message). */
  failNextAction?: string | boolean;
}

export interface SimDeviceInput {
  hostname: string;
  tags?: string[];
  ephemeral?: boolean;
  serverId?: number | null;
  connected?: boolean;
}

export interface SimDevicePatch {
  tags?: string[];
  hostname?: string;
}

/** The control surface, in-process; the `/_sim/...` HTTP routes call exactly these. */
export interface SimControl {
  reset(timings?: SimTimingsInput): void;
  timings(): SimTimings;
  setTimings(timings: SimTimingsInput): SimTimings;
  faults(): SimFaults;
  setFaults(faults: SimFaults | SimFaultRule[]): void;
  clearFaults(): void;
  state(): SimState;
  requestCounts(): Record<string, number>;
  resetRequestCounts(): void;
  createServer(input?: SimServerInput): SimServerState;
  updateServer(id: number, patch: SimServerPatch): SimServerState | undefined;
  deleteServer(id: number): boolean;
  createDevice(input: SimDeviceInput): TailscaleDeviceBody;
  deleteDevice(id: string): boolean;
  /** Changes a device's tags or hostname as an admin would; undefined for an unknown device. */
  updateDevice(id: string, patch: SimDevicePatch): TailscaleDeviceBody | undefined;
  /** Invalidates every Tailscale access token (clients must fetch a new one). */
  revokeAccessTokens(): number;
  /** The Hetzner projects, with their servers, snapshots, limit and requests. */
  projects(): SimProjectView[];
  /** Sets a project's server limit (null = none); undefined for an unknown project. */
  updateProject(name: string, patch: { maxServers?: number | null }): SimProjectView | undefined;
  /** Marks a location (`fsn1`) or a type in a location (`cx22@fsn1`) sold out, or available again. */
  setSoldOut(place: string, soldOut: boolean): string[];
}

interface Enrollment {
  plan: TailscaleUp | undefined;
  state: EnrollmentState;
  error?: string;
  deviceId?: string;
}

export interface CloudSimulatorOptions {
  timings?: SimTimingsInput;
  seed?: number;
  /** Wall clock; read on every request, so sinon fake timers steer the simulator too. */
  now?: () => number;
  /** Accepted credentials (default: SIM_DEFAULT_CREDENTIALS). */
  credentials?: SimCredentialsInput;
  /** SSH keys the Hetzner project has from the start and again after every reset (names, or names with keys). */
  sshKeys?: SimSshKeyInput[];
  /**
   * Hetzner projects, each with its own token, servers, snapshots and limit. Omitted: one project
   * `default` that every token of `credentials` opens.
   */
  projects?: SimProjectInput[];
}

/** All simulated cloud state. Transport-free: the HTTP layer and `control` both drive it. */
export class CloudSimulator {
  readonly scheduler = new Scheduler();
  readonly random: Random;
  /** The first project's (the only one unless `projects` were given). */
  readonly hetzner: HetznerCloud;
  readonly sshKeys: SshKeyStore;
  readonly projects: SimProject[];
  private readonly projectByToken = new Map<string, SimProject>();
  private readonly projectCounts = new Map<string, Map<string, number>>();
  private readonly initialLimits: (number | null)[];
  /** `fsn1` or `cx22@fsn1`. */
  readonly soldOut = new Set<string>();
  readonly tailnet: Tailnet;
  readonly faults: FaultInjector;
  readonly rateLimiter: RateLimiter;
  readonly control: SimControl;
  readonly credentials: SimCredentials;
  private current: SimTimings;
  private readonly initialTimings: SimTimings;
  private readonly enrollments = new Map<number, Enrollment>();
  private readonly counts = new Map<string, number>();
  private readonly clock: () => number;

  constructor(opts: CloudSimulatorOptions, knownTemplates: ReadonlySet<string>) {
    this.clock = opts.now ?? (() => Date.now());
    this.credentials = resolveCredentials(opts.credentials);
    this.random = new Random(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
    this.initialTimings = mergeTimings(DEFAULT_TIMINGS, opts.timings);
    this.current = cloneTimings(this.initialTimings);
    this.rateLimiter = new RateLimiter(this.current.rateLimit);
    this.faults = new FaultInjector(this.random, knownTemplates);
    const ids = newIdSequences();
    const inputs: SimProjectInput[] = opts.projects ?? [{ name: 'default', token: '', maxServers: null }];
    if (inputs.length === 0 || new Set(inputs.map((p) => p.name)).size !== inputs.length) throw new Error('simulator: projects need distinct names');
    this.projects = inputs.map((input) => {
      const sshKeys = new SshKeyStore({ now: this.clock, seed: opts.sshKeys });
      const project: SimProject = {
        name: input.name,
        tokens: opts.projects ? [input.token] : [...this.credentials.hetznerTokens],
        sshKeys,
        maxServers: input.maxServers ?? null,
        hetzner: undefined as unknown as HetznerCloud,
      };
      project.hetzner = new HetznerCloud({
        scheduler: this.scheduler,
        random: this.random,
        timings: () => this.current,
        sshKeys,
        ids,
        soldOut: (type, location) => this.soldOut.has(location) || this.soldOut.has(`${type}@${location}`),
        maxServers: () => project.maxServers,
        hooks: {
          onStatusChange: (server, _from, at) => this.onServerStatus(server, at),
          onRestart: (server, at) => this.onServerRestart(server, at),
          onDeleted: (server, at) => {
            this.tailnet.onServerDeleted(server.id, at);
            this.enrollments.delete(server.id);
          },
          deviceOnDisk: (server) => this.tailnet.deviceForServer(server.id)?.id ?? server.fromImage?.deviceId ?? null,
        },
      });
      return project;
    });
    if (opts.projects) this.credentials.hetznerTokens = this.projects.flatMap((p) => p.tokens);
    for (const p of this.projects) for (const t of p.tokens) this.projectByToken.set(t, p);
    this.initialLimits = this.projects.map((p) => p.maxServers);
    this.hetzner = this.projects[0].hetzner;
    this.sshKeys = this.projects[0].sshKeys;
    this.tailnet = new Tailnet({
      random: this.random,
      tokenTtlSeconds: () => this.current.tokenTtlSeconds,
      isClient: (id, secret) => this.credentials.tailscaleClients.some((c) => c.clientId === id && c.clientSecret === secret),
    });
    this.control = this.buildControl();
  }

  get timings(): SimTimings {
    return this.current;
  }

  /** Current time, after applying every state change that is due by then. */
  now(): number {
    const now = this.clock();
    this.scheduler.runDue(now);
    return now;
  }

  countRequest(key: string, project?: SimProject): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    if (!project) return;
    const counts = this.projectCounts.get(project.name) ?? new Map<string, number>();
    counts.set(key, (counts.get(key) ?? 0) + 1);
    this.projectCounts.set(project.name, counts);
  }

  /** The project a Hetzner API token opens; undefined for a token no project has. */
  projectOf(token: string | undefined): SimProject | undefined {
    return token === undefined ? undefined : this.projectByToken.get(token);
  }

  /** A server of any project (ids are global). */
  findServer(id: number): { server: ServerRecord; project: SimProject } | undefined {
    for (const project of this.projects) {
      const server = project.hetzner.servers.get(id);
      if (server) return { server, project };
    }
    return undefined;
  }

  private alive(server: ServerRecord): boolean {
    return this.findServer(server.id)?.server === server;
  }

  private projectView(p: SimProject): SimProjectView {
    return {
      name: p.name,
      servers: p.hetzner.servers.size,
      snapshots: p.hetzner.images.size,
      maxServers: p.maxServers,
      requests: Object.fromEntries(this.projectCounts.get(p.name) ?? []),
    };
  }

  serverState(server: ServerRecord, project: SimProject = this.findServer(server.id)?.project ?? this.projects[0]): SimServerState {
    const e = this.enrollment(server);
    return {
      ...project.hetzner.serverBody(server),
      _sim: {
        ignoresAcpi: server.ignoresAcpi,
        failNextAction: server.failNextAction,
        sshKeys: server.sshKeys,
        userData: server.userData,
        project: project.name,
        enrollment: {
          state: e.state,
          ...(e.plan ? { hostname: e.plan.hostname ?? server.name } : {}),
          ...(e.error ? { error: e.error } : {}),
          ...(e.deviceId ? { deviceId: e.deviceId } : {}),
        },
      },
    };
  }

  private enrollment(server: ServerRecord): Enrollment {
    let e = this.enrollments.get(server.id);
    if (!e) {
      // cloud-init's order decides: a join that some earlier command never lets run never enrolls.
      const boot = firstBoot(server.userData);
      const plan = boot.join;
      e = { plan, state: plan ? 'waiting' : 'none', ...(boot.blockedBy ? { error: `cloud-init never gets past ${boot.blockedBy}` } : {}) };
      this.enrollments.set(server.id, e);
    }
    return e;
  }

  /**
   * The machine restarts in place: its device drops off the tailnet at once and tailscaled is back
   * after a boot, unless the server was switched off or changed power again meanwhile.
   */
  private onServerRestart(server: ServerRecord, at: number): void {
    this.tailnet.onServerPower(server.id, false, at);
    const seq = server.powerSeq;
    this.scheduler.schedule(at + this.current.bootMs, (due) => {
      if (!this.alive(server) || server.powerSeq !== seq || server.status !== 'running') return;
      this.tailnet.onServerPower(server.id, true, due);
    });
  }

  private onServerStatus(server: ServerRecord, at: number): void {
    const running = server.status === 'running';
    this.tailnet.onServerPower(server.id, running, at);
    if (!running) return;
    const restored = server.fromImage?.deviceId;
    if (restored && !this.tailnet.deviceForServer(server.id)) {
      // The disk came from a snapshot of an enrolled machine: once booted, tailscaled comes back as
      // that same node (same device id and address), unless the device was removed meanwhile.
      this.scheduler.schedule(at + this.current.bootMs, (due) => {
        if (!this.alive(server) || server.status !== 'running') return;
        this.tailnet.restoreDevice(restored, server.id, due);
      });
    }
    const e = this.enrollment(server);
    if (e.state !== 'waiting' || !e.plan) return;
    const plan = e.plan;
    e.state = 'scheduled';
    // cloud-init runs `tailscale up` once, on the first boot that gets far enough.
    this.scheduler.schedule(at + this.current.bootMs + this.current.enrollDelayMs, (due) => {
      if (!this.alive(server)) return;
      if (server.status !== 'running') {
        e.state = 'waiting';
        return;
      }
      const result = this.tailnet.enroll(
        { authKey: plan.authKey, hostname: plan.hostname ?? server.name, serverId: server.id },
        due,
      );
      if (result.ok) {
        e.state = 'enrolled';
        e.deviceId = result.device.id;
      } else {
        e.state = 'failed';
        e.error = result.reason;
      }
    });
  }

  private buildControl(): SimControl {
    return {
      reset: (timings) => {
        // Pending timers first, so nothing scheduled before the reset fires into the fresh state.
        for (const held of [this.scheduler, this.enrollments, this.counts, this.projectCounts, this.faults, this.soldOut]) held.clear();
        for (const p of this.projects) for (const model of [p.hetzner, p.sshKeys]) model.reset();
        for (const model of [this.tailnet, this.rateLimiter]) model.reset();
        this.projects.forEach((p, i) => (p.maxServers = this.initialLimits[i]));
        this.current = mergeTimings(this.initialTimings, timings);
        this.rateLimiter.configure(this.current.rateLimit);
      },
      timings: () => cloneTimings(this.current),
      setTimings: (timings) => {
        this.now();
        this.current = mergeTimings(this.current, timings);
        this.rateLimiter.configure(this.current.rateLimit);
        return cloneTimings(this.current);
      },
      faults: () => this.faults.get(),
      setFaults: (faults) => this.faults.set(faults),
      clearFaults: () => this.faults.clear(),
      state: () => {
        const now = this.now();
        const all = this.projects;
        return {
          now: iso(now),
          soldOut: [...this.soldOut],
          servers: all.flatMap((p) => [...p.hetzner.servers.values()].map((s) => this.serverState(s, p))),
          actions: all.flatMap((p) => [...p.hetzner.actions.values()].map((a) => p.hetzner.actionBody(a, now))),
          images: all.flatMap((p) => [...p.hetzner.images.values()].map((i) => p.hetzner.imageBody(i))),
          sshKeys: [...this.sshKeys.keys.values()].map((k) => this.sshKeys.body(k)),
          devices: [...this.tailnet.devices.values()].map((d) => this.tailnet.deviceBody(d)),
          authKeys: [...this.tailnet.keys.values()].map((k) => ({
            ...this.tailnet.keyBody(k, now, false),
            used: k.usedAt !== null,
            uses: k.uses,
            usedAt: k.usedAt === null ? null : iso(k.usedAt),
          })),
        };
      },
      requestCounts: () => Object.fromEntries(this.counts),
      resetRequestCounts: () => {
        this.counts.clear();
        this.projectCounts.clear();
      },
      createServer: (input = {}) => {
        const now = this.now();
        const project = input.project === undefined ? this.projects[0] : this.projects.find((p) => p.name === input.project);
        if (!project) throw new SimInputError(`unknown project ${input.project}`);
        if (input.status !== undefined && !SERVER_STATUSES.includes(input.status)) {
          throw new SimInputError(`status must be one of ${SERVER_STATUSES.join(', ')}`);
        }
        const parsed = project.hetzner.parseCreateBody({
          name: input.name ?? `unmanaged-${this.random.string(6).toLowerCase()}`,
          server_type: input.server_type ?? 'cx22',
          image: input.image ?? 'ubuntu-24.04',
          location: input.location,
          user_data: input.user_data,
          labels: input.labels,
        });
        const server = project.hetzner.createServerDirect(
          { ...parsed, status: input.status, ignoresAcpi: input.ignoresAcpi },
          now,
        );
        return this.serverState(server, project);
      },
      updateServer: (id, patch) => {
        const now = this.now();
        if (patch.status !== undefined && !SERVER_STATUSES.includes(patch.status)) {
          throw new SimInputError(`status must be one of ${SERVER_STATUSES.join(', ')}`);
        }
        const found = this.findServer(id);
        const server = found?.project.hetzner.patchServer(id, patch, now);
        return server ? this.serverState(server, found!.project) : undefined;
      },
      deleteServer: (id) => {
        const now = this.now();
        return this.findServer(id)?.project.hetzner.removeServerDirect(id, now) ?? false;
      },
      createDevice: (input) => {
        const now = this.now();
        if (!input || typeof input.hostname !== 'string' || input.hostname === '') {
          throw new SimInputError('hostname is required');
        }
        return this.tailnet.deviceBody(this.tailnet.addDevice(input, now));
      },
      deleteDevice: (id) => {
        this.now();
        return this.tailnet.deleteDevice(id);
      },
      updateDevice: (id, patch) => {
        this.now();
        try {
          const device = this.tailnet.patchDevice(id, patch);
          return device ? this.tailnet.deviceBody(device) : undefined;
        } catch (err) {
          if (err instanceof TailscaleApiError) throw new SimInputError(err.message);
          throw err;
        }
      },
      revokeAccessTokens: () => this.tailnet.revokeTokens(),
      projects: () => {
        this.now();
        return this.projects.map((p) => this.projectView(p));
      },
      updateProject: (name, patch) => {
        const project = this.projects.find((p) => p.name === name);
        if (!project) return undefined;
        if (patch.maxServers !== undefined) {
          if (patch.maxServers !== null && !(Number.isInteger(patch.maxServers) && patch.maxServers >= 0)) {
            throw new SimInputError('maxServers must be a whole number ≥ 0 or null');
          }
          project.maxServers = patch.maxServers;
        }
        return this.projectView(project);
      },
      setSoldOut: (place, soldOut) => {
        const [type, location] = place.includes('@') ? place.split('@', 2) : [undefined, place];
        if (!LOCATIONS[location] || (type !== undefined && !serverTypeNames().includes(type))) {
          throw new SimInputError(`${place} is not a location (fsn1) or a server type in a location (cx22@fsn1)`);
        }
        this.now();
        if (soldOut) this.soldOut.add(place);
        else this.soldOut.delete(place);
        return [...this.soldOut];
      },
    };
  }
}

export { HetznerApiError, SimInputError };
