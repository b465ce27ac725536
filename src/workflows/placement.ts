import type { Redis } from 'ioredis';
import { CloudApiError } from '../clients/errors';
import type { CreateServerOptions, CreateServerResult, HetznerServer } from '../clients/hetzner/hetzner.types';
import type { HetznerProject, HetznerProjects } from '../clients/hetzner/projects';
import type { Placement } from '../config';
import type { PlacementRefusal } from '../entities';
import type { Logger } from '../lib/logger';

export type { Placement };

/** How the cloud refused a create: a place (sold out, cannot place, disabled) or the whole project (at its limit). */
export type RefusalKind = 'place' | 'project';

/**
 * A create the cloud refused before making anything, for reasons of capacity rather than of the
 * request: `412 resource_unavailable` (sold out), `422 placement_error`, a location or server type
 * that is disabled or no longer offered there — the next place may take it; `403
 * resource_limit_exceeded` — the next project may. Anything else is not a capacity refusal.
 */
export function refusalKind(err: unknown): RefusalKind | null {
  if (!(err instanceof CloudApiError) || err.api !== 'hetzner') return null;
  if (err.status === 403 && err.code === 'resource_limit_exceeded') return 'project';
  if (err.status === 412 || err.code === 'resource_unavailable' || err.code === 'placement_error') return 'place';
  if (
    (err.status === 422 || err.status === 400) &&
    (err.code === 'invalid_input' || err.code === 'unsupported_error' || err.code === 'location_disabled') &&
    /location|server type/i.test(err.message) &&
    /unsupported|disabled|deprecated|not (available|offered|supported)|unavailable/i.test(err.message)
  ) {
    return 'place';
  }
  return null;
}

/**
 * Places and projects the cloud refused recently, shared by every worker: a sold-out pair is skipped
 * fleet-wide for the cooldown instead of each provision paying a create to learn it again.
 */
export interface CapacityStore {
  /** Of `places` and `projects`, those refused within their cooldown. */
  refused(places: readonly Placement[], projects: readonly string[]): Promise<{ places: Set<string>; projects: Set<string> }>;
  refusePlace(place: Placement, ttlMs: number): Promise<void>;
  markProjectFull(project: string, ttlMs: number): Promise<void>;
  /** The project's request budget as a worker's client last saw it (kept an hour). */
  noteBudget(project: string, budget: ProjectBudget): Promise<void>;
  budgets(projects: readonly string[]): Promise<Map<string, ProjectBudget>>;
}

export interface ProjectBudget {
  limit: number | null;
  remaining: number | null;
  /** ISO time it was seen. */
  at: string;
}

const BUDGET_TTL_MS = 3_600_000;

export const placeKey = (p: Placement): string => `${p.location}:${p.serverType}`;

/**
 * In Redis, under the queue prefix: the workers share it already, and a key that expires by itself
 * is exactly a cooldown (no table, no sweep). Losing it (a Redis flush) costs one refused create.
 */
export class RedisCapacityStore implements CapacityStore {
  constructor(private readonly deps: { redis: Redis; prefix: string }) {}

  private key(kind: 'place' | 'project-full' | 'budget', id: string): string {
    return `${this.deps.prefix}:capacity:${kind}:${id}`;
  }

  async refused(places: readonly Placement[], projects: readonly string[]) {
    const keys = [...places.map((p) => this.key('place', placeKey(p))), ...projects.map((p) => this.key('project-full', p))];
    const values = keys.length === 0 ? [] : await this.deps.redis.mget(...keys);
    return {
      places: new Set(places.filter((_, i) => values[i] !== null).map(placeKey)),
      projects: new Set(projects.filter((_, i) => values[places.length + i] !== null)),
    };
  }

  async refusePlace(place: Placement, ttlMs: number): Promise<void> {
    if (ttlMs > 0) await this.deps.redis.set(this.key('place', placeKey(place)), String(Date.now()), 'PX', ttlMs);
  }

  async markProjectFull(project: string, ttlMs: number): Promise<void> {
    if (ttlMs > 0) await this.deps.redis.set(this.key('project-full', project), String(Date.now()), 'PX', ttlMs);
  }

  async noteBudget(project: string, budget: ProjectBudget): Promise<void> {
    await this.deps.redis.set(this.key('budget', project), JSON.stringify(budget), 'PX', BUDGET_TTL_MS);
  }

  async budgets(projects: readonly string[]): Promise<Map<string, ProjectBudget>> {
    const values = projects.length === 0 ? [] : await this.deps.redis.mget(...projects.map((p) => this.key('budget', p)));
    const out = new Map<string, ProjectBudget>();
    projects.forEach((p, i) => {
      if (values[i]) out.set(p, JSON.parse(values[i]!) as ProjectBudget);
    });
    return out;
  }

  /** Projects currently marked full. */
  async fullProjects(projects: readonly string[]): Promise<Set<string>> {
    return (await this.refused([], projects)).projects;
  }
}

/** One process's memory: for workflows run without Redis (a single worker); not shared. */
export class MemoryCapacityStore implements CapacityStore {
  private readonly until = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  private live(key: string): boolean {
    const until = this.until.get(key);
    return until !== undefined && until > this.now();
  }

  async refused(places: readonly Placement[], projects: readonly string[]) {
    return {
      places: new Set(places.map(placeKey).filter((k) => this.live(`place:${k}`))),
      projects: new Set(projects.filter((p) => this.live(`project:${p}`))),
    };
  }

  async refusePlace(place: Placement, ttlMs: number): Promise<void> {
    this.until.set(`place:${placeKey(place)}`, this.now() + ttlMs);
  }

  async markProjectFull(project: string, ttlMs: number): Promise<void> {
    this.until.set(`project:${project}`, this.now() + ttlMs);
  }

  private readonly seen = new Map<string, ProjectBudget>();

  async noteBudget(project: string, budget: ProjectBudget): Promise<void> {
    this.seen.set(project, budget);
  }

  async budgets(projects: readonly string[]): Promise<Map<string, ProjectBudget>> {
    return new Map(projects.flatMap((p) => (this.seen.has(p) ? [[p, this.seen.get(p)!] as const] : [])));
  }
}

export class CapacityExhaustedError extends CloudApiError {
  constructor(readonly refusals: PlacementRefusal[], last: CloudApiError) {
    super({
      api: 'hetzner',
      status: last.status,
      code: last.code,
      message: `No placement has capacity: ${refusals.map(describeRefusal).join('; ')}`,
      // Capacity comes back: the job tries again after its backoff, from the first placement.
      retryable: true,
      method: last.method,
      path: last.path,
    });
    this.name = 'CapacityExhaustedError';
  }
}

export function describeRefusal(r: Pick<PlacementRefusal, 'project' | 'location' | 'serverType' | 'status' | 'code'>): string {
  return `${r.location}/${r.serverType} in project ${r.project}: ${r.status} ${r.code}`;
}

export interface PlacedCreate {
  created: CreateServerResult | null;
  /** A server an earlier attempt made, found where a refused create was checked (nothing to create). */
  found: HetznerServer | null;
  project: string;
  placement: Placement;
  refusals: PlacementRefusal[];
}

export interface PlacementDeps {
  projects: HetznerProjects;
  capacity: CapacityStore;
  cooldownMs: number;
  logger: Logger;
}

/**
 * Creates a server at the first place and in the first project that take it. Projects are tried in
 * `projects` order (the instance's recorded one first: a retry looks where the last attempt may
 * have created), placements in order within each, places in their cooldown after the others. Each
 * refused create is checked to have left no server (a listing by the job's labels in that project)
 * before the next place is tried; a refused place is put in the cooldown fleet-wide, a full project
 * marked full. Ambiguous failures (a timeout, a 5xx) are thrown: the job's retry looks for the server.
 */
export async function createPlaced(
  deps: PlacementDeps,
  o: {
    placements: readonly Placement[];
    projects: readonly HetznerProject[];
    /** Records the project and place before each create, so a retry of the job looks there. */
    choose(project: string, placement: Placement): Promise<void>;
    create(placement: Placement): Promise<CreateServerResult>;
    /** Servers the job made in the current project (what a refused create must not have left). */
    leftBehind(): Promise<HetznerServer[]>;
    refused(refusal: PlacementRefusal, next: { project: string; placement: Placement } | null): Promise<void>;
  },
): Promise<PlacedCreate> {
  const { projects: registry, capacity } = deps;
  const cooling = await capacity.refused(o.placements, []).catch((err: unknown) => {
    deps.logger.warn({ err }, '[Placement] Cannot read the capacity cooldowns; trying every placement');
    return { places: new Set<string>(), projects: new Set<string>() };
  });
  // Places in their cooldown go last rather than never: they may be back, and nothing else may be left.
  const placements = [...o.placements.filter((p) => !cooling.places.has(placeKey(p))), ...o.placements.filter((p) => cooling.places.has(placeKey(p)))];
  const refusals: PlacementRefusal[] = [];
  const attempts = o.projects.flatMap((project) => placements.map((placement) => ({ project, placement })));
  let lastError: CloudApiError | null = null;
  let skipProject: string | null = null;
  for (let i = 0; i < attempts.length; i++) {
    const { project, placement } = attempts[i];
    if (project.name === skipProject) continue;
    // A place another project already refused as sold out is sold out for this one too.
    if (refusals.some((r) => r.code !== 'resource_limit_exceeded' && r.location === placement.location && r.serverType === placement.serverType)) continue;
    registry.use(project.name);
    await o.choose(project.name, placement);
    const release = registry.hold(project.name);
    let created: CreateServerResult;
    try {
      created = await o.create(placement);
    } catch (err) {
      const kind = refusalKind(err);
      if (!kind) throw err;
      const cloudErr = err as CloudApiError;
      lastError = cloudErr;
      // A refusal makes nothing; a server of this job here would be an earlier attempt's, and is the one to keep.
      const left = await o.leftBehind();
      if (left.length > 0) return { created: null, found: left[0], project: project.name, placement, refusals };
      const refusal: PlacementRefusal = {
        project: project.name,
        location: placement.location,
        serverType: placement.serverType,
        code: cloudErr.code,
        status: cloudErr.status,
        message: cloudErr.message.slice(0, 300),
        at: new Date().toISOString(),
      };
      refusals.push(refusal);
      if (kind === 'project') {
        skipProject = project.name;
        await capacity.markProjectFull(project.name, deps.cooldownMs).catch(() => undefined);
      } else {
        await capacity.refusePlace(placement, deps.cooldownMs).catch(() => undefined);
      }
      const next = attempts.slice(i + 1).find((a) => a.project.name !== skipProject) ?? null;
      deps.logger.warn({ refusal, next: next && { project: next.project.name, ...next.placement } }, `[Placement] Create refused: ${describeRefusal(refusal)}`);
      await o.refused(refusal, next && { project: next.project.name, placement: next.placement });
      continue;
    } finally {
      release();
      const rl = project.client.rateLimiter.state();
      await capacity.noteBudget(project.name, { limit: rl.limit ?? null, remaining: rl.remaining ?? null, at: new Date().toISOString() }).catch(() => undefined);
    }
    return { created, found: null, project: project.name, placement, refusals };
  }
  throw new CapacityExhaustedError(refusals, lastError!);
}

/** The placements of an agent: its own list, else its single location and type, else the fleet's. */
export function placementsOf(
  spec: { placements?: Placement[] | null; location?: string; serverType?: string } | null | undefined,
  settings: { placements?: Placement[]; location: string; serverType: string },
): Placement[] {
  if (spec?.placements && spec.placements.length > 0) return spec.placements;
  if (spec?.location && spec.serverType) return [{ location: spec.location, serverType: spec.serverType }];
  return settings.placements && settings.placements.length > 0 ? settings.placements : [{ location: settings.location, serverType: settings.serverType }];
}

export type { CreateServerOptions };
