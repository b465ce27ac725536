import { AsyncLocalStorage } from 'node:async_hooks';
import type { HetznerClient } from './hetzner.client';

/** One Hetzner project of the deployment: its own client (and with it its own rate-limit budget). */
export interface HetznerProject {
  name: string;
  client: HetznerClient;
  /** The server limit as configured; null = not known (learned from the cloud's refusals). */
  maxServers: number | null;
}

export class UnknownProjectError extends Error {
  constructor(readonly project: string, known: string[]) {
    super(`Hetzner project "${project}" is not configured (HETZNER_PROJECTS has ${known.join(', ')}); its servers cannot be reached`);
    this.name = 'UnknownProjectError';
  }
}

/** What a project choice knows of each project at the moment it is made. */
export interface ProjectLoad {
  /** Live servers this deployment has recorded in the project (null = not counted). */
  servers: number | null;
  /** Marked full by a recent resource_limit_exceeded (shared between workers for the cooldown). */
  full: boolean;
}

/**
 * Requests a provision spends in the cloud, about: the create, the action and server polls, the
 * listing of a retry. Used only to spread concurrent choices before their requests are counted.
 */
const REQUESTS_PER_PROVISION = 6;
/** Stands for a server limit nobody configured: far above any real one. */
const UNKNOWN_LIMIT = 1_000_000;
const LOW_BUDGET_FRACTION = 0.1;

/**
 * The deployment's Hetzner projects, and which one the current operation works in.
 *
 * Every call for an instance must reach the project its server (or snapshot) is in. Rather than
 * threading a client through every workflow, guard and shared function, each operation runs inside a project
 * scope (`within`), and `client` — the HetznerClient every workflow holds — sends each call with
 * that project's client. A provision enters a scope of its own choosing (`use`) before it creates.
 * Outside any scope (a single-project deployment, the catalogue and price reads, which are the same
 * in every project) the first project answers.
 */
export class HetznerProjects {
  readonly list: readonly HetznerProject[];
  /** The client every workflow holds: each call goes to the current scope's project. */
  readonly client: HetznerClient;
  private readonly byName: Map<string, HetznerProject>;
  private readonly scope = new AsyncLocalStorage<{ project: HetznerProject }>();
  /** Choices made in this process whose create has not answered yet, per project. */
  private readonly pending = new Map<string, number>();

  constructor(projects: HetznerProject[]) {
    if (projects.length === 0) throw new Error('HetznerProjects needs at least one project');
    this.list = projects;
    this.byName = new Map(projects.map((p) => [p.name, p]));
    // One project: its client itself, and no scopes (an AsyncLocalStorage in use makes every promise
    // of the process pay for tracking its context).
    if (projects.length === 1) {
      this.client = projects[0].client;
      return;
    }
    const bound = new Map<HetznerClient, Map<PropertyKey, unknown>>();
    this.client = new Proxy({} as HetznerClient, {
      get: (_target, prop) => {
        const client = this.current().client;
        const value = (client as unknown as Record<PropertyKey, unknown>)[prop];
        if (typeof value !== 'function') return value;
        let methods = bound.get(client);
        if (!methods) bound.set(client, (methods = new Map()));
        let method = methods.get(prop);
        if (!method) methods.set(prop, (method = (value as (...a: unknown[]) => unknown).bind(client)));
        return method;
      },
    });
  }

  get single(): boolean {
    return this.list.length === 1;
  }

  get names(): string[] {
    return this.list.map((p) => p.name);
  }

  get(name: string): HetznerProject {
    const project = this.byName.get(name);
    if (!project) throw new UnknownProjectError(name, this.names);
    return project;
  }

  /** The project of the current scope; the first one outside any. */
  current(): HetznerProject {
    return this.scope.getStore()?.project ?? this.list[0];
  }

  /**
   * Runs `fn` with `project` as the scope's project: null = the first one (nothing was created yet),
   * undefined = a scope of its own starting at the caller's project.
   */
  within<T>(project: string | null | undefined, fn: () => Promise<T>): Promise<T> {
    if (this.single) {
      if (typeof project === 'string') this.get(project);
      return fn();
    }
    const start = project === undefined ? this.current() : project === null ? this.list[0] : this.get(project);
    return this.scope.run({ project: start }, fn);
  }

  /** Moves the current scope to another project (a provision that chose, or was refused by, one). */
  use(project: string): void {
    if (this.single) {
      this.get(project);
      return;
    }
    const store = this.scope.getStore();
    if (!store && project === this.list[0].name) return;
    if (!store) throw new Error('HetznerProjects.use outside a project scope');
    store.project = this.get(project);
  }

  /** Held while a create in `project` is in flight, so concurrent choices spread. */
  hold(project: string): () => void {
    this.pending.set(project, (this.pending.get(project) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.pending.set(project, Math.max(0, (this.pending.get(project) ?? 1) - 1));
    };
  }

  /**
   * Room for servers: the configured limit less the servers counted and the creates in flight. With
   * no limit configured (Hetzner has no API to read it) the room is unknown: a large number less the
   * servers, so the emptier project still comes first; a resource_limit_exceeded marks it full.
   */
  serverRoom(project: HetznerProject, load: ProjectLoad | undefined): number {
    const used = (load?.servers ?? 0) + (this.pending.get(project.name) ?? 0);
    return (project.maxServers ?? UNKNOWN_LIMIT) - used;
  }

  /** Whether the project's budget is in its last tenth: other projects go first while it refills. */
  private lowOnRequests(project: HetznerProject): boolean {
    const { limit, remaining } = project.client.rateLimiter.state();
    return limit !== undefined && remaining !== undefined && this.requestRoom(project) < limit * LOW_BUDGET_FRACTION;
  }

  /** Requests left in the project's budget as its client last saw it (the limit, or Hetzner's 3600, before any answer). */
  requestRoom(project: HetznerProject): number {
    const state = project.client.rateLimiter.state();
    const remaining = state.remaining ?? state.limit ?? 3600;
    return remaining - (this.pending.get(project.name) ?? 0) * REQUESTS_PER_PROVISION;
  }

  /**
   * The projects in the order a provision tries them: projects marked full, or with no server room
   * left by what is counted, go last (they may have freed up); then those low on requests; then the
   * most server room (the fewest servers and creates in flight), the most requests left, the order
   * configured.
   */
  rank(loads: Map<string, ProjectLoad>): HetznerProject[] {
    const scored = this.list.map((p, i) => {
      const load = loads.get(p.name);
      const room = this.serverRoom(p, load);
      // Requests in tenths of the budget: a few requests more or less never outweigh a server.
      const tenth = (p.client.rateLimiter.state().limit ?? 3600) * LOW_BUDGET_FRACTION;
      return { p, i, blocked: load?.full === true || room <= 0, low: this.lowOnRequests(p), requests: Math.ceil(this.requestRoom(p) / tenth), room };
    });
    scored.sort((a, b) => Number(a.blocked) - Number(b.blocked) || Number(a.low) - Number(b.low) || b.room - a.room || b.requests - a.requests || a.i - b.i);
    return scored.map((s) => s.p);
  }
}
