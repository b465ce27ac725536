import { expect } from 'chai';
import type { Event } from '../../src/entities';
import { ReplayPages } from '../../src/events/replay-pages';

// The page store on its own, over a table held in an array: who may share a page, and how many
// reads run at once.

function table(ids: number[]) {
  const reads: string[] = [];
  let running = 0;
  let most = 0;
  const gates: Array<() => void> = [];
  const pages = (opts: { gated?: boolean; concurrency?: number } = {}) =>
    new ReplayPages({
      limit: 2,
      concurrency: opts.concurrency,
      frame: (row) => `id: ${row.id}\n\n`,
      read: async (afterId, { limit }) => {
        reads.push(afterId);
        running++;
        most = Math.max(most, running);
        if (opts.gated) await new Promise<void>((resolve) => gates.push(resolve));
        running--;
        return ids.filter((id) => id > Number(afterId)).slice(0, limit).map((id) => ({ id: String(id) }) as Event);
      },
    });
  return { ids, reads, pages, gates, most: () => most };
}

describe('events: replay pages', () => {
  it('serves a page read after a client registered to it, and reads again for a client that registered later', async () => {
    const t = table([1, 3, 5, 7, 9]);
    const pages = t.pages();
    const early = pages.mark();
    const first = await pages.get('0', { registeredAt: early });
    expect(first).to.include({ text: 'id: 1\n\nid: 3\n\n', last: false });
    expect(first.ids).to.deep.equal(['1', '3']);
    // Another client that registered before that read: the same page, no second read.
    expect(await pages.get('0', { registeredAt: early })).to.equal(first);
    expect(t.reads).to.deep.equal(['0']);

    // A row committed before a later client registered might be missing from the kept page: it reads.
    t.ids.splice(1, 0, 2);
    const late = pages.mark();
    const again = await pages.get('0', { registeredAt: late });
    expect(again.ids).to.deep.equal(['1', '2']);
    expect(t.reads).to.deep.equal(['0', '0']);

    // The end of the table is marked as such.
    expect(await pages.get('7', { registeredAt: late })).to.include({ last: true });
  });

  it('ends a full page at a multiple of the page size, so that clients from different ids meet on the same pages', async () => {
    const t = table([1, 2, 3, 4, 5, 6]);
    const pages = t.pages();
    const at = pages.mark();
    // From 1: rows 2 and 3, cut after 2; from 2 on, every client asks for (2, 4], (4, 6].
    const cut = await pages.get('1', { registeredAt: at });
    expect(cut).to.include({ last: false });
    expect(cut.ids).to.deep.equal(['2']);
    expect((await pages.get('2', { registeredAt: at })).ids).to.deep.equal(['3', '4']);
    // The last, short page is never cut.
    expect((await pages.get('5', { registeredAt: at })).ids).to.deep.equal(['6']);
  });

  it('keeps at most `concurrency` reads running, and forgets a read that failed', async () => {
    const t = table([1, 2, 3, 4, 5, 6, 7, 8]);
    const pages = t.pages({ gated: true, concurrency: 2 });
    const at = pages.mark();
    const all = Promise.all(['0', '2', '4', '6'].map((after) => pages.get(after, { registeredAt: at })));
    await new Promise((r) => setImmediate(r));
    expect(t.reads).to.deep.equal(['0', '2']);
    while (t.reads.length < 4 || t.gates.length > 0) {
      t.gates.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    expect((await all).map((p) => p.ids)).to.deep.equal([['1', '2'], ['3', '4'], ['5', '6'], ['7', '8']]);
    expect(t.most()).to.equal(2);

    let fail = true;
    const failing = new ReplayPages({
      limit: 2,
      frame: (row) => row.id,
      read: async () => {
        if (fail) throw new Error('database down');
        return [{ id: '1' } as Event];
      },
    });
    const mark = failing.mark();
    let thrown: unknown;
    await failing.get('0', { registeredAt: mark }).catch((err: unknown) => (thrown = err));
    expect((thrown as Error).message).to.equal('database down');
    fail = false;
    expect((await failing.get('0', { registeredAt: mark })).ids).to.deep.equal(['1']);
  });
});
