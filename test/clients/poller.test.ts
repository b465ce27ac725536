import { expect } from 'chai';
import { BatchPoller, KEEP_WAITING, ReadCoalescer } from '../../src/clients/poller';

/** A clock that moves only when a sleeper is woken: every sleep returns at once, having advanced time. */
function fakeClock() {
  let t = 0;
  return {
    now: () => t,
    // A sleep ends a turn of the event loop later, at the time it was due (never earlier than now).
    sleep: async (ms: number) => {
      const until = t + Math.max(0, ms);
      await new Promise((r) => setImmediate(r));
      t = Math.max(t, until);
    },
  };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const timeout = () => new Error('timed out');

describe('BatchPoller', () => {
  it('never answers a waiter from a round that started before it began waiting', async () => {
    const clock = fakeClock();
    const rounds: Array<{ keys: string[]; answer: ReturnType<typeof deferred<Map<string, number>>> }> = [];
    const poller = new BatchPoller<string, number>({
      intervalMs: 10,
      ...clock,
      fetch: (keys) => {
        const answer = deferred<Map<string, number>>();
        rounds.push({ keys, answer });
        return answer.promise;
      },
    });
    const first = poller.read('a', { timeoutMs: 1000, timeoutError: timeout });
    await new Promise((r) => setImmediate(r));
    expect(rounds).to.have.length(1);
    // Asked while the first round is under way: that round's answer is older than the question.
    const second = poller.read('a', { timeoutMs: 1000, timeoutError: timeout });
    rounds[0].answer.resolve(new Map([['a', 1]]));
    expect(await first).to.equal(1);
    await new Promise((r) => setImmediate(r));
    expect(rounds).to.have.length(2);
    rounds[1].answer.resolve(new Map([['a', 2]]));
    expect(await second).to.equal(2);
  });

  it('spaces the looks of a waiter with backoff', async () => {
    const clock = fakeClock();
    const roundsAt: number[] = [];
    const poller = new BatchPoller<string, number>({
      intervalMs: 10,
      ...clock,
      fetch: async (keys) => {
        roundsAt.push(clock.now());
        // Finished at the sixth look.
        return new Map(keys.map((k) => [k, roundsAt.length === 6 ? 1 : 0]));
      },
    });
    const done = poller.wait('a', {
      timeoutMs: 10_000,
      backoff: { factor: 2, maxIntervalMs: 40 },
      evaluate: (v) => (v === 1 ? { done: true, value: v } : KEEP_WAITING),
      timeoutError: timeout,
    });
    expect(await done).to.equal(1);
    expect(roundsAt).to.deep.equal([10, 30, 70, 110, 150, 190]);
  });

  it('keeps rounds one request per interval apart when told what a round costs', async () => {
    const clock = fakeClock();
    const roundsAt: number[] = [];
    const poller = new BatchPoller<number, number>({
      intervalMs: 10,
      ...clock,
      cost: (keys) => Math.min(keys, 2),
      fetch: async (keys) => {
        roundsAt.push(clock.now());
        return new Map(keys.map((k) => [k, 0]));
      },
    });
    const waits = [1, 2, 3].map((k) =>
      poller.wait(k, { timeoutMs: 55, evaluate: () => KEEP_WAITING, timeoutError: timeout }).catch((e: Error) => e.message),
    );
    expect(await Promise.all(waits)).to.deep.equal(['timed out', 'timed out', 'timed out']);
    // Three keys cost two requests: a round every two intervals, not every interval.
    expect(roundsAt).to.deep.equal([10, 30, 50]);
  });
});

describe('ReadCoalescer', () => {
  it('answers the callers of one window with one fetch, and a caller arriving during that fetch with the next', async () => {
    const clock = fakeClock();
    const fetches: Array<{ keys: string[]; answer: ReturnType<typeof deferred<Map<string, number>>> }> = [];
    const reader = new ReadCoalescer<string, number>(
      (keys) => {
        const answer = deferred<Map<string, number>>();
        fetches.push({ keys, answer });
        return answer.promise;
      },
      { windowMs: 50, sleep: clock.sleep },
    );
    const a = reader.get('x');
    const b = reader.get('x');
    const c = reader.get('y');
    await new Promise((r) => setImmediate(r));
    expect(fetches.map((f) => f.keys)).to.deep.equal([['x', 'y']]);
    const late = reader.get('x');
    fetches[0].answer.resolve(new Map([['x', 1], ['y', 2]]));
    expect(await Promise.all([a, b, c])).to.deep.equal([1, 1, 2]);
    await new Promise((r) => setImmediate(r));
    expect(fetches).to.have.length(2);
    fetches[1].answer.resolve(new Map([['x', 3]]));
    expect(await late).to.equal(3);
  });
});
