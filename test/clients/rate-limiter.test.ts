import { expect } from 'chai';
import { RateLimiter, parseRateLimitHeaders, parseRetryAfter } from '../../src/clients';

// The limiter's arithmetic, on a hand-driven clock; its effect on real traffic is covered in
// request-core.test.ts against the simulator.
describe('RateLimiter', () => {
  const T0 = 1_700_000_000_000;

  it('does not pace while more than 10% of the budget is left', () => {
    const rl = new RateLimiter({ now: () => T0 });
    rl.observe({ limit: 3600, remaining: 400, resetAt: T0 + 3_200_000 });
    expect([rl.reserve(), rl.reserve(), rl.reserve()]).to.deep.equal([0, 0, 0]);
  });

  it('spaces concurrent callers near the refill rate once the budget runs low (refill model)', () => {
    const rl = new RateLimiter({ model: 'refill', now: () => T0 });
    // 100 left of 3600, full again in 3500 s: one request comes back per second.
    rl.observe({ limit: 3600, remaining: 100, resetAt: T0 + 3_500_000 });
    const waits = Array.from({ length: 4 }, () => rl.reserve());
    expect(waits[0]).to.equal(0);
    const gaps = waits.slice(1).map((w, i) => w - waits[i]);
    for (const gap of gaps) expect(gap).to.be.within(1000, 2000);
    // The emptier the budget, the slower: the gaps grow as reservations use it up.
    expect(gaps[2]).to.be.greaterThan(gaps[0]);
  });

  it('spreads what is left over the time until the reset (window model)', () => {
    const rl = new RateLimiter({ model: 'window', now: () => T0 });
    rl.observe({ limit: 100, remaining: 5, resetAt: T0 + 10_000 });
    const waits = Array.from({ length: 3 }, () => rl.reserve());
    expect(waits[0]).to.equal(0);
    expect(waits[1]).to.be.within(2000, 3000);
    expect(waits[2] - waits[1]).to.be.within(2000, 3500);
  });

  it('stops pacing once the reset has passed', () => {
    let now = T0;
    const rl = new RateLimiter({ model: 'window', now: () => now });
    rl.observe({ limit: 100, remaining: 1, resetAt: T0 + 5_000 });
    now = T0 + 6_000;
    expect([rl.reserve(), rl.reserve()]).to.deep.equal([0, 0]);
  });

  it('counts the requests still in flight against the budget an answer reports', () => {
    const rl = new RateLimiter({ model: 'refill', now: () => T0 });
    // A burst of 50 before any answer: nothing is known, nothing is paced.
    expect(Array.from({ length: 50 }, () => rl.reserve()).every((w) => w === 0)).to.equal(true);
    // The first answer says 400 of 3600 are left; the 49 still in flight will spend 49 of them.
    rl.settle({ limit: 3600, remaining: 400, resetAt: T0 + 3_200_000 });
    expect(rl.state().remaining).to.equal(351);
    // Said low enough, the next request is paced although the answer alone would not have paced it.
    rl.settle({ limit: 3600, remaining: 380, resetAt: T0 + 3_200_000 });
    expect(rl.state().remaining).to.equal(332);
    const low = new RateLimiter({ model: 'refill', now: () => T0 });
    for (let i = 0; i < 300; i++) low.reserve();
    low.settle({ limit: 3600, remaining: 400, resetAt: T0 + 3_500_000 });
    expect(low.state().remaining).to.equal(101);
    expect([low.reserve(), low.reserve()][1]).to.be.greaterThan(0);
    // Requests given up (no answer) leave the count too.
    for (let i = 0; i < 299; i++) low.settle();
    low.settle({ limit: 3600, remaining: 400, resetAt: T0 + 3_500_000 });
    expect(low.state().remaining).to.equal(399);
  });

  it('holds every caller back after a 429', () => {
    const rl = new RateLimiter({ now: () => T0 });
    rl.blockUntil(T0 + 1500);
    expect([rl.reserve(), rl.reserve()]).to.deep.equal([1500, 1500]);
  });

  it('reads RateLimit headers as a UNIX timestamp or as seconds from now', () => {
    const abs = parseRateLimitHeaders(
      new Headers({ 'RateLimit-Limit': '3600', 'RateLimit-Remaining': '12', 'RateLimit-Reset': String(T0 / 1000 + 60) }),
      T0,
    );
    expect(abs).to.deep.equal({ limit: 3600, remaining: 12, resetAt: T0 + 60_000 });
    expect(parseRateLimitHeaders(new Headers({ 'RateLimit-Reset': '30' }), T0).resetAt).to.equal(T0 + 30_000);
    expect(parseRateLimitHeaders(new Headers(), T0)).to.deep.equal({ limit: undefined, remaining: undefined, resetAt: undefined });
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(parseRetryAfter('2', T0)).to.equal(2000);
    expect(parseRetryAfter(new Date(T0 + 5000).toUTCString(), T0)).to.equal(5000);
    expect(parseRetryAfter(null, T0)).to.equal(undefined);
    expect(parseRetryAfter('soon', T0)).to.equal(undefined);
  });
});
