import type { SimControl, SimFaultRule } from '../../src/simulator';

/**
 * Fault rules on the simulator, counted by the simulator itself: every rule carries a finite
 * `times`, which the simulator decrements each time the rule injects an error, so
 * `initial - remaining` is exactly how many faults it injected. Rules are told apart by `message`.
 */
export class FaultLedger {
  private readonly initial = new Map<string, number>();
  private readonly removedFired = new Map<string, number>();
  private active: (SimFaultRule & { message: string })[] = [];

  constructor(private readonly control: SimControl) {}

  /** Adds a rule (the others keep their remaining counts). `times` caps how often it may fire. */
  add(rule: SimFaultRule & { message: string; times: number }): void {
    this.refresh();
    if (this.initial.has(rule.message)) throw new Error(`fault rule ${rule.message} already exists`);
    this.initial.set(rule.message, rule.times);
    this.active.push({ ...rule });
    this.control.setFaults({ rules: this.active });
  }

  /** Removes every rule whose message starts with `prefix`. */
  remove(prefix: string): void {
    this.refresh();
    for (const r of this.active.filter((x) => x.message.startsWith(prefix))) {
      this.removedFired.set(r.message, this.firedOf(r.message));
    }
    this.active = this.active.filter((x) => !x.message.startsWith(prefix));
    this.control.setFaults({ rules: this.active });
  }

  clear(): void {
    this.remove('');
  }

  /** Faults injected so far, by rule message. */
  fired(): Record<string, number> {
    this.refresh();
    const out: Record<string, number> = {};
    for (const message of this.initial.keys()) out[message] = this.removedFired.get(message) ?? this.firedOf(message);
    return out;
  }

  /** Faults injected so far, summed by the part of the message before the last `:`. */
  firedBy(depth: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [message, n] of Object.entries(this.fired())) {
      const key = message.split(':').slice(0, depth).join(':');
      out[key] = (out[key] ?? 0) + n;
    }
    return out;
  }

  private remaining(message: string): number {
    // A rule that used up its `times` is dropped by the simulator: nothing remains.
    return this.control.faults().rules.find((r) => r.message === message)?.times ?? 0;
  }

  private firedOf(message: string): number {
    return this.initial.get(message)! - this.remaining(message);
  }

  /** Keeps our copy's `times` equal to what the simulator has left, so re-applying never resets a count. */
  private refresh(): void {
    const live = this.control.faults().rules;
    this.active = this.active
      .map((r) => ({ ...r, times: live.find((l) => l.message === r.message)?.times ?? 0 }))
      .filter((r) => r.times > 0);
  }
}
