import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const RESULTS_DIR = join(__dirname, '..', 'results');

/** One line of the summary table: what was measured, the figure, and the target it is held against. */
export interface Row {
  bench: string;
  metric: string;
  value: string;
  target?: string;
  /** undefined when the line has no target. A missed target fails the run (exit code 1), not only the line. */
  met?: boolean;
}

/** The lines that have a target and missed it: any one of them fails the run. */
export function missedTargets(rows: readonly Row[]): Row[] {
  return rows.filter((r) => r.target !== undefined && r.met !== true);
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export const fmt = {
  rate: (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1)),
  ms: (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} ms`,
  ratio: (n: number) => n.toFixed(2),
  s: (ms: number) => `${(ms / 1000).toFixed(2)} s`,
};

export function table(rows: Row[]): string {
  const cells = [
    ['bench', 'metric', 'value', 'target', ''],
    ...rows.map((r) => [r.bench, r.metric, r.value, r.target ?? '', r.met === undefined ? '' : r.met ? 'met' : 'MISSED']),
  ];
  const widths = cells[0].map((_, c) => Math.max(...cells.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (c === 2 ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function writeResult(name: string, data: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}

export function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${msg}\n`);
}
