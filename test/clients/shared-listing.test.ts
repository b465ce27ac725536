import { expect } from 'chai';
import { equalityTerms, SharedListing } from '../../src/clients/hetzner/shared-listing';

interface Item {
  id: number;
  labels: Record<string, string>;
}

const noWait = async () => undefined;

function listing(items: Item[], o: { complete?: (selector: string) => boolean } = {}) {
  const calls: string[] = [];
  const list = async (selector: string) => {
    calls.push(selector);
    const terms = equalityTerms(selector)!;
    const found = items.filter((i) => [...terms].every(([k, v]) => i.labels[k] === v));
    return { items: found, pages: 1, complete: o.complete?.(selector) ?? true };
  };
  return { calls, list };
}

const ITEMS: Item[] = [
  { id: 1, labels: { 'managed-by': 'tailfleet', agent: 'a' } },
  { id: 2, labels: { 'managed-by': 'tailfleet', agent: 'b' } },
  { id: 3, labels: { 'managed-by': 'tailfleet', agent: 'c' } },
  { id: 4, labels: { agent: 'a' } },
];

describe('SharedListing', () => {
  it('answers concurrent narrower selectors from one broad listing, each with its own items', async () => {
    const { calls, list } = listing(ITEMS);
    const shared = new SharedListing<Item>({ base: 'managed-by=tailfleet', list, windowMs: 0, sleep: noWait });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((x) => shared.list(`managed-by=tailfleet,agent=${x}`)));
    expect(calls).to.deep.equal(['managed-by=tailfleet']);
    expect([a, b, c].map((r) => r.map((i) => i.id))).to.deep.equal([[1], [2], [3]]);
  });

  it('lists a selector on its own when it is alone, or not narrower than the base', async () => {
    const { calls, list } = listing(ITEMS);
    const shared = new SharedListing<Item>({ base: 'managed-by=tailfleet', list, windowMs: 0, sleep: noWait });
    expect((await shared.list('managed-by=tailfleet,agent=a')).map((i) => i.id)).to.deep.equal([1]);
    expect((await shared.list('agent=a')).map((i) => i.id)).to.deep.equal([1, 4]);
    expect(calls).to.deep.equal(['managed-by=tailfleet,agent=a', 'agent=a']);
  });

  it('trusts no broad listing whose pages shifted: each selector is listed on its own', async () => {
    const { calls, list } = listing(ITEMS, { complete: (s) => s !== 'managed-by=tailfleet' });
    const shared = new SharedListing<Item>({ base: 'managed-by=tailfleet', list, windowMs: 0, sleep: noWait });
    const results = await Promise.all(['a', 'b'].map((x) => shared.list(`managed-by=tailfleet,agent=${x}`)));
    expect(results.map((r) => r.map((i) => i.id))).to.deep.equal([[1], [2]]);
    expect(calls).to.deep.equal(['managed-by=tailfleet', 'managed-by=tailfleet,agent=a', 'managed-by=tailfleet,agent=b']);
  });

  it('reads only plain key=value selectors as terms', () => {
    expect(equalityTerms('managed-by=tailfleet,tailfleet-agent=x')).to.deep.equal(
      new Map([
        ['managed-by', 'tailfleet'],
        ['tailfleet-agent', 'x'],
      ]),
    );
    for (const s of ['a!=b', 'a==b', 'a', '!a', 'a in (b,c)']) expect(equalityTerms(s), s).to.equal(undefined);
  });
});
