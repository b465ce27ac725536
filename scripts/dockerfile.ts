/**
 * A small Dockerfile reader: enough of the syntax for our own Dockerfile (stages, line
 * continuations, exec-form JSON arguments, HEALTHCHECK options). Used by the image check
 * (scripts/check-image.ts), which replays the build without Docker, and by the test that holds
 * the Dockerfile to its required shape.
 */

export interface Instruction {
  keyword: string;
  /** Everything after the keyword, continuation lines joined. */
  args: string;
  line: number;
}

export interface Stage {
  /** The image of the FROM line, e.g. node:22-bookworm-slim. */
  base: string;
  name?: string;
  instructions: Instruction[];
}

export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++;
      const next = lines[i]!.trim();
      if (next.startsWith('#')) continue;
      line = `${line.slice(0, -1).trimEnd()} ${next}`;
    }
    const m = /^(\S+)\s*(.*)$/.exec(line)!;
    const instruction = { keyword: m[1]!.toUpperCase(), args: m[2]!, line: start + 1 };
    if (instruction.keyword === 'FROM') {
      const from = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      if (!from) throw new Error(`Dockerfile line ${start + 1}: cannot read FROM ${instruction.args}`);
      stages.push({ base: from[1]!, name: from[2], instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) {
      if (instruction.keyword === 'ARG') continue;
      throw new Error(`Dockerfile line ${start + 1}: ${instruction.keyword} before any FROM`);
    }
    stage.instructions.push(instruction);
  }
  return stages;
}

/** `["node", "x.js"]` → ['node', 'x.js']; undefined for the shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.trim().startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) return undefined;
  return parsed as string[];
}

/** HEALTHCHECK's options (`--interval=10s`) and its command. */
export function parseHealthcheck(args: string): { options: Record<string, string>; command: string } {
  const options: Record<string, string> = {};
  let rest = args.trim();
  for (let m = /^--([a-z-]+)=(\S+)\s+/.exec(rest); m; m = /^--([a-z-]+)=(\S+)\s+/.exec(rest)) {
    options[m[1]!] = m[2]!;
    rest = rest.slice(m[0].length);
  }
  const cmd = /^CMD\s+(.*)$/i.exec(rest);
  return { options, command: cmd ? cmd[1]! : rest };
}

/** `KEY=value` pairs of an ENV line (the legacy `ENV KEY value` form too). */
export function parseEnv(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!args.includes('=')) {
    const [key, ...value] = args.split(/\s+/);
    out[key!] = value.join(' ');
    return out;
  }
  for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    out[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
  }
  return out;
}

/** `COPY [--from=stage] src... dest`. */
export function parseCopy(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.trim().split(/\s+/);
  let from: string | undefined;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift()!;
    const m = /^--from=(.+)$/.exec(flag);
    if (m) from = m[1];
  }
  const dest = words.pop();
  if (!dest || words.length === 0) throw new Error(`cannot read COPY ${args}`);
  return { from, sources: words, dest };
}
