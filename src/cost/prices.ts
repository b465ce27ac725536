import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerLocationPrice } from '../clients/hetzner/hetzner.types';

/**
 * Prices as the cloud quotes them, read from GET /pricing and GET /server_types and kept for a
 * while: prices change a few times a year, and the API must not spend a request per agent view.
 * Amounts are monthly and gross (the project's VAT included), in the project's currency.
 */

/** The read-only part of the Hetzner client prices need: an API process builds a client for this alone. */
export type PriceSource = Pick<HetznerClient, 'getPricing' | 'listServerTypes'>;

export interface Prices {
  currency: string;
  /** Monthly gross price of a server type in a location; null when the cloud quotes none. */
  server(serverType: string, location: string): number | null;
  /** Monthly gross price of a primary IPv4 address in a location (billed beside the server). */
  primaryIpv4(location: string): number | null;
  /** Monthly gross price of one GB of snapshot. */
  snapshotPerGb: number;
  /** GB of disk a server type has (what a snapshot of it can be at most). */
  diskGb(serverType: string): number | null;
}

const monthly = (prices: HetznerLocationPrice[] | undefined, location: string): number | null => {
  const p = prices?.find((x) => x.location === location);
  return p ? Number(p.price_monthly.gross) : null;
};

export class PriceList {
  private readonly source: PriceSource;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private cached: { prices: Prices; at: number } | undefined;
  private inflight: Promise<Prices> | undefined;

  constructor(deps: { source: PriceSource; ttlMs?: number; now?: () => number }) {
    this.source = deps.source;
    this.ttlMs = deps.ttlMs ?? 60 * 60_000;
    this.now = deps.now ?? Date.now;
  }

  /**
   * The current prices: cached for `ttlMs`; concurrent callers share one fetch. When a refresh
   * fails, the prices held are served a while longer rather than none; with none held, it throws.
   */
  async get(): Promise<Prices> {
    if (this.cached && this.now() - this.cached.at < this.ttlMs) return this.cached.prices;
    this.inflight ??= this.fetch().finally(() => {
      this.inflight = undefined;
    });
    try {
      return await this.inflight;
    } catch (err) {
      if (this.cached) return this.cached.prices;
      throw err;
    }
  }

  private async fetch(): Promise<Prices> {
    const [pricing, types] = await Promise.all([this.source.getPricing(), this.source.listServerTypes()]);
    const byType = new Map(types.map((t) => [t.name, t]));
    const pricingTypes = new Map(pricing.server_types.map((t) => [t.name, t]));
    const ipv4 = pricing.primary_ips.find((p) => p.type === 'ipv4');
    const prices: Prices = {
      currency: pricing.currency,
      server: (type, location) => monthly(byType.get(type)?.prices ?? pricingTypes.get(type)?.prices, location),
      primaryIpv4: (location) => monthly(ipv4?.prices, location),
      snapshotPerGb: Number(pricing.image.price_per_gb_month.gross),
      diskGb: (type) => byType.get(type)?.disk ?? null,
    };
    this.cached = { prices, at: this.now() };
    return prices;
  }
}
