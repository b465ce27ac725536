/**
 * Which of the newest event ids a stream has sent, for telling a replayed row from the same row
 * arriving live. A ring of bits over the id space: a client that replays a long history costs a
 * fixed 2 KiB instead of a set entry per event. Ids more than `size` below the highest one marked
 * are forgotten and count as not sent: a row committed that much later than its id's neighbours is
 * sent (perhaps twice) rather than lost.
 */
export class SentWindow {
  private readonly bits: Uint8Array;
  private readonly size: bigint;
  /** The highest id marked. */
  private top: bigint;

  constructor(start: bigint, size = 16_384) {
    if (size <= 0 || size % 8 !== 0) throw new Error('the window size must be a positive multiple of 8');
    this.bits = new Uint8Array(size / 8);
    this.size = BigInt(size);
    this.top = start;
  }

  has(id: bigint): boolean {
    if (id > this.top || id <= this.top - this.size) return false;
    const i = this.slot(id);
    return (this.bits[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  add(id: bigint): void {
    if (id <= this.top - this.size) return;
    if (id > this.top) {
      // The slots between the old top and the new one held ids that left the window.
      if (id - this.top >= this.size) this.bits.fill(0);
      else for (let k = this.top + 1n; k < id; k++) this.clear(k);
      this.top = id;
    }
    const i = this.slot(id);
    this.bits[i >> 3]! |= 1 << (i & 7);
  }

  private clear(id: bigint): void {
    const i = this.slot(id);
    this.bits[i >> 3]! &= ~(1 << (i & 7));
  }

  private slot(id: bigint): number {
    return Number(((id % this.size) + this.size) % this.size);
  }
}
