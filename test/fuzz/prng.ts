import { Random } from '../../src/simulator/random';

/**
 * A small seeded PRNG over the simulator's (mulberry32): the same seed gives the same sequence on
 * every machine, so a failing fuzz or chaos run can be replayed exactly with its printed seed.
 */
export class Prng {
  private readonly random: Random;

  constructor(readonly seed: number) {
    this.random = new Random(seed);
  }

  /** A float in [0, 1). */
  next(): number {
    return this.random.next();
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + this.random.int(max - min + 1);
  }

  bool(p = 0.5): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.random.int(items.length)]!;
  }

  /** Picks by weight: `[[weight, value], ...]`. */
  weighted<T>(entries: readonly (readonly [number, T])[]): T {
    const total = entries.reduce((s, [w]) => s + w, 0);
    let r = this.next() * total;
    for (const [w, v] of entries) {
      r -= w;
      if (r < 0) return v;
    }
    return entries[entries.length - 1]![1];
  }

  string(length: number, alphabet: string): string {
    return this.random.string(length, alphabet);
  }

  hex(length: number): string {
    return this.random.hex(length);
  }

  /** A random v4-shaped UUID: with 122 random bits it never names a row that exists. */
  uuid(): string {
    const h = this.hex(32).split('');
    h[12] = '4';
    h[16] = '89ab'[this.int(0, 3)]!;
    const s = h.join('');
    return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
  }
}

/** The seed from `envName` (decimal or 0x-hex), else a fresh random one. */
export function seedFrom(envName: string): number {
  const raw = process.env[envName];
  if (raw !== undefined && raw !== '') {
    const n = raw.startsWith('0x') ? Number.parseInt(raw.slice(2), 16) : Number.parseInt(raw, 10);
    if (!Number.isFinite(n)) throw new Error(`${envName} must be an integer, got ${JSON.stringify(raw)}`);
    return n >>> 0;
  }
  return Math.floor(Math.random() * 2 ** 32) >>> 0;
}
