import type { SimRateLimit } from './timings';

export interface RateLimitDecision {
  allowed: boolean;
  headers: { 'RateLimit-Limit': string; 'RateLimit-Remaining': string; 'RateLimit-Reset': string };
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Token bucket per bearer token, refilled continuously like Hetzner's (1 request/s for 3600/h). */
export class RateLimiter {
  private buckets = new Map<string, Bucket>();

  constructor(private config: SimRateLimit) {}

  configure(config: SimRateLimit): void {
    this.config = { ...config };
    for (const b of this.buckets.values()) b.tokens = Math.min(b.tokens, config.limit);
  }

  reset(): void {
    this.buckets.clear();
  }

  take(token: string, now: number): RateLimitDecision {
    const { limit, refillPerSecond } = this.config;
    let b = this.buckets.get(token);
    if (!b) {
      b = { tokens: limit, updatedAt: now };
      this.buckets.set(token, b);
    } else {
      b.tokens = Math.min(limit, b.tokens + ((now - b.updatedAt) / 1000) * refillPerSecond);
      b.updatedAt = now;
    }
    const allowed = b.tokens >= 1;
    if (allowed) b.tokens -= 1;
    const missing = limit - b.tokens;
    // With no refill the bucket never fills again; an hour is what Hetzner's window would say.
    const fullInMs = missing <= 0 ? 0 : refillPerSecond > 0 ? (missing / refillPerSecond) * 1000 : 3_600_000;
    return {
      allowed,
      headers: {
        'RateLimit-Limit': String(limit),
        'RateLimit-Remaining': String(Math.floor(b.tokens)),
        'RateLimit-Reset': String(Math.ceil((now + fullInMs) / 1000)),
      },
    };
  }
}
