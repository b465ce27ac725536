import { expect } from 'chai';
import { SentWindow } from '../../src/events/sent-window';

describe('events: the window of sent ids', () => {
  it('remembers the ids marked within the window, in any order, and nothing else', () => {
    const w = new SentWindow(100n, 64);
    for (const id of [101n, 103n, 102n, 110n]) w.add(id);
    for (const id of [101n, 102n, 103n, 110n]) expect(w.has(id), String(id)).to.equal(true);
    for (const id of [100n, 104n, 109n, 111n, 1000n]) expect(w.has(id), String(id)).to.equal(false);
  });

  it('forgets ids that fall out of the window, and does not mistake a newer id for an old one in the same slot', () => {
    const w = new SentWindow(0n, 64);
    w.add(5n);
    w.add(60n);
    expect(w.has(5n)).to.equal(true);
    // 69 takes slot 5: 5 is out of the window now, and 69 is marked.
    w.add(69n);
    expect(w.has(5n)).to.equal(false);
    expect(w.has(69n)).to.equal(true);
    // 133 is 64 past 69: the slots between were cleared, 69 itself is out of the window.
    w.add(133n);
    expect(w.has(69n)).to.equal(false);
    expect(w.has(70n)).to.equal(false);
    expect(w.has(133n)).to.equal(true);
    // A jump of more than the window clears every slot.
    w.add(10_000n);
    expect(w.has(133n)).to.equal(false);
    expect(w.has(10_000n)).to.equal(true);
    // Older than the window: not remembered, not marked.
    w.add(100n);
    expect(w.has(100n)).to.equal(false);
  });
});
