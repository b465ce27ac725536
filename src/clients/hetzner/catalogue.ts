import type { HetznerClient } from './hetzner.client';
import type { HetznerLocation, HetznerServerType } from './hetzner.types';
import { UnavailableError } from '../../errors';
import type { Logger } from '../../lib/logger';

/**
 * What the cloud offers: server types, locations and where each type is available, read from the
 * Hetzner API (GET /server_types, GET /locations) and cached, so a create can be refused before
 * anything is written when the cloud would refuse it later. Read-only: built for API roles in the
 * composition root over the process's one Hetzner client, of which it only asks these two lists.
 */

export interface SpecProblem {
  /** serverType, location, or placements.N.serverType / placements.N.location. */
  field: string;
  message: string;
}

/** The cloud's catalogue could not be read and nothing was cached: the create cannot be judged. */
export class CatalogueUnavailableError extends UnavailableError {
  override readonly code = 'catalogue_unavailable';
  constructor(cause: unknown) {
    super('The cloud catalogue (server types and locations) cannot be read right now', { cause });
    this.name = 'CatalogueUnavailableError';
  }
}

export interface SpecChecker {
  check(spec: { serverType: string; location: string; placements?: { location: string; serverType: string }[] }): Promise<SpecProblem[]>;
}

interface Snapshot {
  types: Map<string, HetznerServerType>;
  locations: Map<string, HetznerLocation>;
  readAt: number;
}

export class CloudCatalogue implements SpecChecker {
  private snapshot: Snapshot | undefined;
  private loading: Promise<Snapshot> | undefined;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly deps: {
      hetzner: Pick<HetznerClient, 'listServerTypes' | 'listLocations'>;
      logger: Logger;
      /** How long a read catalogue is used (default 10 minutes). */
      ttlMs?: number;
      now?: () => number;
    },
  ) {
    this.ttlMs = deps.ttlMs ?? 10 * 60_000;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Problems with a type/location pair; [] when the cloud offers the type there right now. While the
   * catalogue cannot be read (and nothing is cached) the pair is not judged: the create is accepted
   * and the cloud's own answer to it decides, as before there was a catalogue.
   */
  async check(spec: { serverType: string; location: string; placements?: { location: string; serverType: string }[] }): Promise<SpecProblem[]> {
    let catalogue: Snapshot;
    try {
      catalogue = await this.current();
    } catch (err) {
      this.deps.logger.warn({ err }, '[Catalogue] Cannot read the cloud catalogue; accepting the create unchecked');
      return [];
    }
    if (!spec.placements || spec.placements.length <= 1) return this.checkPlace(catalogue, spec, { location: 'location', serverType: 'serverType' });
    // Several places: each must exist and be offered; sold out right now only refuses when all are
    // (the provision falls back from one to the next).
    const problems: SpecProblem[] = [];
    const unavailable: SpecProblem[] = [];
    spec.placements.forEach((place, i) => {
      for (const p of this.checkPlace(catalogue, place, { location: `placements.${i}.location`, serverType: `placements.${i}.serverType` })) {
        (p.message.endsWith('right now') ? unavailable : problems).push(p);
      }
    });
    return unavailable.length === spec.placements.length ? [...problems, ...unavailable] : problems;
  }

  private checkPlace(catalogue: Snapshot, spec: { serverType: string; location: string }, field: { location: string; serverType: string }): SpecProblem[] {
    const problems: SpecProblem[] = [];
    const location = catalogue.locations.get(spec.location);
    if (!location) {
      problems.push({ field: field.location, message: `unknown location "${spec.location}" (known: ${[...catalogue.locations.keys()].join(', ')})` });
    }
    const type = catalogue.types.get(spec.serverType);
    if (!type) {
      problems.push({ field: field.serverType, message: `unknown server type "${spec.serverType}"` });
    } else if (location) {
      const offer = type.locations.find((l) => l.name === spec.location);
      const gone = offer?.deprecation && Date.parse(offer.deprecation.unavailable_after) <= this.now();
      if (!offer || gone) {
        problems.push({ field: field.serverType, message: `server type "${spec.serverType}" is not offered in location "${spec.location}"` });
      } else if (!offer.available) {
        problems.push({ field: field.serverType, message: `server type "${spec.serverType}" is unavailable in location "${spec.location}" right now` });
      }
    }
    return problems;
  }

  /** A fresh catalogue, one read at a time; a stale one is used while the cloud cannot be read. */
  private async current(): Promise<Snapshot> {
    const cached = this.snapshot;
    if (cached && this.now() - cached.readAt < this.ttlMs) return cached;
    this.loading ??= this.read().finally(() => (this.loading = undefined));
    try {
      return await this.loading;
    } catch (err) {
      if (cached) {
        this.deps.logger.warn({ err }, '[Catalogue] Could not refresh the cloud catalogue; using the cached one');
        return cached;
      }
      throw new CatalogueUnavailableError(err);
    }
  }

  private async read(): Promise<Snapshot> {
    const [types, locations] = await Promise.all([this.deps.hetzner.listServerTypes(), this.deps.hetzner.listLocations()]);
    const snapshot: Snapshot = {
      types: new Map(types.map((t) => [t.name, t])),
      locations: new Map(locations.map((l) => [l.name, l])),
      readAt: this.now(),
    };
    this.snapshot = snapshot;
    return snapshot;
  }
}
