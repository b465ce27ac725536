import { gunzipSync } from 'node:zlib';

/**
 * What cloud-init makes of a server's user data on its first boot, as far as the simulated tailnet
 * needs: which `tailscale up` runs first, or what keeps it from running. The rules are cloud-init's
 * (Debian's cloud-init 22.4): Hetzner's base64 decoding, gzip, MIME multipart (nested, base64 and
 * quoted-printable parts), types from a document's first line, cloud-config parts merged with
 * `dict(replace)+list()+str()` unless a part says otherwise (`merge_how`, `Merge-Type`), shell
 * scripts written under their file names (a later part of the same name overwrites an earlier one),
 * and then the order things run in: boothooks, bootcmd, the per-once / per-boot / per-instance
 * scripts, then the user scripts with runcmd's among them, each directory in name order.
 *
 * Not modelled: `#include` (the simulated machine reaches no URL), cloud-config-archive entries and
 * jinja rendering (a template's body is read as it stands).
 */

export interface TailscaleUp {
  authKey: string;
  /** From `--hostname`; undefined = the machine's own hostname (the server name). */
  hostname?: string;
}

export interface FirstBoot {
  /** The first `tailscale up` cloud-init reaches. */
  join?: TailscaleUp;
  /** What cloud-init runs before any `tailscale up` and that never exits (then `join` is unset). */
  blockedBy?: string;
}

export interface UserDataPart {
  /** The part's Content-Type as cloud-init settles it (from the header or the first line). */
  type: string;
  /** The part's file name, or cloud-init's `part-NNN` when it has none. */
  filename: string;
  headers: Record<string, string>;
  body: string;
}

const FLAG_VALUE = String.raw`(?:=|\s+)(?:"([^"]*)"|'([^']*)'|([^\s"'\],]+))`;
const AUTH_KEY = new RegExp(String.raw`--auth-?key` + FLAG_VALUE);
const HOSTNAME = new RegExp(String.raw`--hostname` + FLAG_VALUE);
const TAILSCALE_UP = /tailscale\W+up\b/;

/** A command that never returns, so nothing cloud-init would run after it ever runs. */
const NEVER_EXITS = /\bsleep\s+inf(?:inity)?\b|\btail\s+-f\b|\bwhile\s+(?:true|:)\s*;?\s*do\b/;

/** cloud-init's types by a document's first line (handlers INCLUSION_TYPES_MAP), longest first. */
const STARTS_WITH: [string, string][] = (
  [
    ['#include', 'text/x-include-url'],
    ['#include-once', 'text/x-include-once-url'],
    ['#!', 'text/x-shellscript'],
    ['#cloud-config', 'text/cloud-config'],
    ['#part-handler', 'text/part-handler'],
    ['#cloud-boothook', 'text/cloud-boothook'],
    ['#cloud-config-archive', 'text/cloud-config-archive'],
    ['#cloud-config-jsonp', 'text/cloud-config-jsonp'],
    ['## template: jinja', 'text/jinja2'],
  ] as [string, string][]
).sort((a, b) => b[0].length - a[0].length);

const RETYPED = ['text/plain', 'text/x-not-multipart', 'text/x-shellscript'];
const GZIP_TYPES = /^application\/(x-)?(gzip|gzipped|gzip-compressed|gunzip|compress|compressed)$/;

function typeFromStart(body: string): string | undefined {
  const start = body.trimStart().toLowerCase();
  return STARTS_WITH.find(([prefix]) => start.startsWith(prefix))?.[1];
}

function gunzipMaybe(bytes: Buffer): Buffer {
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  try {
    return gunzipSync(bytes);
  } catch {
    return bytes;
  }
}

interface Entity {
  headers: Record<string, string>;
  body: string;
}

function entity(text: string): Entity {
  const split = /\r?\n\r?\n/.exec(text);
  const head = split ? text.slice(0, split.index) : text;
  const headers: Record<string, string> = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { headers, body: split ? text.slice(split.index + split[0].length) : '' };
}

function param(header: string | undefined, name: string): string | undefined {
  const m = new RegExp(`(?:^|;)\\s*${name}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;\\s]+))`, 'i').exec(header ?? '');
  return m ? (m[1]?.replace(/\\(.)/g, '$1') ?? m[2]) : undefined;
}

function decodeBody(e: Entity): Buffer {
  const encoding = (e.headers['content-transfer-encoding'] ?? '').toLowerCase();
  if (encoding === 'base64') return Buffer.from(e.body.replace(/\s+/g, ''), 'base64');
  if (encoding === 'quoted-printable') {
    const text = e.body.replace(/=\r?\n/g, '');
    return Buffer.from(text.replace(/=([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1');
  }
  return Buffer.from(e.body, 'utf8');
}

/** The leaves of a MIME entity in document order (email's Message.walk). */
function leaves(e: Entity, out: Entity[]): void {
  const contentType = e.headers['content-type'] ?? 'text/plain';
  if (!/^multipart\//i.test(contentType)) {
    out.push(e);
    return;
  }
  const boundary = param(contentType, 'boundary');
  if (!boundary) return;
  const escaped = boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const chunks = e.body.split(new RegExp(`(?:^|\\r?\\n)--${escaped}(--)?[ \\t]*(?=\\r?\\n|$)`));
  // chunks: preamble, then per part its text and the (undefined or "--") capture.
  for (let i = 2; i < chunks.length; i += 2) {
    if (chunks[i - 1] === '--') break;
    leaves(entity(chunks[i]!.replace(/^\r?\n/, '')), out);
  }
}

/**
 * The user data's documents as cloud-init's UserDataProcessor attaches them: decoded, types settled,
 * file names given. Includes and archives are not expanded.
 */
export function userDataParts(userData: string): UserDataPart[] {
  let raw = Buffer.from(userData, 'utf8');
  // Hetzner's datasource: user data that is valid base64 is decoded (helpers/hetzner.maybe_b64decode).
  if (userData.length > 0 && userData.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(userData)) raw = Buffer.from(userData, 'base64');
  const text = gunzipMaybe(raw).toString('utf8');
  const top: Entity[] = [];
  if (/mime-version:/i.test(text.slice(0, 4096))) leaves(entity(text), top);
  else top.push({ headers: { 'content-type': 'text/x-not-multipart' }, body: text });

  const parts: UserDataPart[] = [];
  for (const e of top) {
    let type: string = (e.headers['content-type'] ?? 'text/plain').split(';')[0]!.trim().toLowerCase();
    let bytes = decodeBody(e);
    if (GZIP_TYPES.test(type)) {
      bytes = gunzipMaybe(bytes);
      type = 'text/plain';
    }
    const body = bytes.toString('utf8');
    if (RETYPED.includes(type)) type = typeFromStart(body) ?? type;
    if (type === 'text/x-include-url' || type === 'text/x-include-once-url' || type === 'text/cloud-config-archive') continue;
    const filename = param(e.headers['content-disposition'], 'filename') ?? `part-${String(parts.length + 1).padStart(3, '0')}`;
    parts.push({ type, filename, headers: e.headers, body });
  }
  return parts;
}

/** A file name as cloud-init keeps it (util.clean_filename). */
function cleanFilename(name: string): string {
  return name.replaceAll('/', '_').replace(/[^A-Za-z0-9_.()-]/g, '');
}

/** A cloud-config document's top-level keys, each with its raw YAML text, in order. */
function topLevelKeys(body: string): Map<string, string> {
  const keys = new Map<string, string>();
  let current: string | undefined;
  for (const line of body.split(/\r?\n/)) {
    const key = /^(?:"([^"]+)"|'([^']+)'|([A-Za-z_][\w-]*))\s*:(?:\s|$)/.exec(line);
    if (key) {
      current = key[1] ?? key[2] ?? key[3]!;
      keys.set(current, line.slice(key[0].length));
    } else if (current !== undefined && !/^(#|---)/.test(line)) {
      keys.set(current, `${keys.get(current)}\n${line}`);
    }
  }
  return keys;
}

/** How a cloud-config part merges into the ones before it, from its `merge_how` or `Merge-Type`. */
function mergeRule(keys: Map<string, string>, headers: Record<string, string>): 'replace' | 'keep' | 'append' | 'prepend' {
  const how = [keys.get('merge_how'), keys.get('merge_type'), headers['merge-type'], headers['x-merge-type']].filter(Boolean).join(' ');
  if (!how) return 'replace';
  const dict = /dict\s*\(([^)]*)\)|name:\s*dict[\s\S]*?settings:\s*\[([^\]]*)\]/.exec(how);
  const dictSettings = (dict?.[1] ?? dict?.[2] ?? '').toLowerCase();
  const list = /list\s*\(([^)]*)\)|name:\s*list[\s\S]*?settings:\s*\[([^\]]*)\]/.exec(how);
  const listSettings = (list?.[1] ?? list?.[2] ?? '').toLowerCase();
  if (/recurse_(array|list)/.test(dictSettings) && /prepend/.test(listSettings)) return 'prepend';
  if (/recurse_(array|list)/.test(dictSettings) && /append/.test(listSettings)) return 'append';
  if (/no_replace/.test(dictSettings)) return 'keep';
  return 'replace';
}

/** Where a `tailscale up` or a command that never exits first shows in a script. */
function scan(text: string): { at: number; up?: TailscaleUp } | { at: number; blocks: true } | undefined {
  // Shell line continuations would otherwise split one command over several lines.
  const joined = text.replace(/\\\r?\n/g, ' ');
  const start = TAILSCALE_UP.exec(joined);
  let up: { at: number; up: TailscaleUp } | undefined;
  if (start) {
    const rest = joined.slice(start.index);
    const key = AUTH_KEY.exec(rest);
    const host = HOSTNAME.exec(rest);
    if (key) up = { at: start.index, up: { authKey: key[1] ?? key[2] ?? key[3]!, hostname: host ? (host[1] ?? host[2] ?? host[3]) : undefined } };
  }
  const never = NEVER_EXITS.exec(joined);
  const blocks = never && !(/\bwhile\b/.test(never[0]) && /\b(break|exit)\b/.test(joined.slice(never.index))) ? never.index : -1;
  if (blocks >= 0 && (!up || blocks < up.at)) return { at: blocks, blocks: true };
  return up;
}

/** What runs on the machine's first boot, in cloud-init's order, as [what, text] pairs. */
function firstBootSteps(userData: string): [string, string][] {
  const parts = userDataParts(userData).map((p) =>
    // A jinja template is read as the document it renders to, unrendered.
    p.type === 'text/jinja2' ? { ...p, body: p.body.replace(/^[^\n]*\n/, ''), type: typeFromStart(p.body.replace(/^[^\n]*\n/, '')) ?? 'text/plain' } : p,
  );
  const config = new Map<string, string>();
  const scripts = { 'per-once': new Map<string, string>(), 'per-boot': new Map<string, string>(), 'per-instance': new Map<string, string>(), user: new Map<string, string>() };
  const boothooks: [string, string][] = [];
  for (const part of parts) {
    if (part.type === 'text/cloud-config') {
      const keys = topLevelKeys(part.body);
      const rule = mergeRule(keys, part.headers);
      for (const [key, value] of keys) {
        if (!config.has(key) || rule === 'replace') config.set(key, value);
        else if (rule === 'append') config.set(key, `${config.get(key)}\n${value}`);
        else if (rule === 'prepend') config.set(key, `${value}\n${config.get(key)}`);
      }
    } else if (part.type === 'text/x-shellscript') {
      scripts.user.set(cleanFilename(part.filename), part.body);
    } else if (part.type.startsWith('text/x-shellscript-per-')) {
      const dir = part.type.slice('text/x-shellscript-'.length) as keyof typeof scripts;
      scripts[dir]?.set(cleanFilename(part.filename), part.body);
    } else if (part.type === 'text/cloud-boothook') {
      boothooks.push([`boothook ${part.filename}`, part.body]);
    }
  }
  // cc_runcmd writes runcmd as the user script named `runcmd`, run in name order with the others.
  if (config.has('runcmd')) scripts.user.set('runcmd', config.get('runcmd')!);
  const finalModules = config.get('cloud_final_modules');
  const runs = (module: string) => finalModules === undefined || new RegExp(module.replace('-', '[-_]')).test(finalModules);
  const inOrder = (dir: keyof typeof scripts, module: string): [string, string][] =>
    runs(module) ? [...scripts[dir]].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, text]) => [`${module} ${name}`, text]) : [];
  return [
    ...boothooks,
    ...(config.has('bootcmd') ? [['bootcmd', config.get('bootcmd')!] as [string, string]] : []),
    ...inOrder('per-once', 'scripts-per-once'),
    ...inOrder('per-boot', 'scripts-per-boot'),
    ...inOrder('per-instance', 'scripts-per-instance'),
    ...inOrder('user', 'scripts-user'),
  ];
}

/** The first `tailscale up` cloud-init runs on the first boot, or what it hangs on before one. */
export function firstBoot(userData: string | null): FirstBoot {
  if (!userData) return {};
  for (const [what, text] of firstBootSteps(userData)) {
    const found = scan(text);
    if (!found) continue;
    if ('blocks' in found) return { blockedBy: what };
    return { join: found.up };
  }
  return {};
}

/** The `tailscale up --auth-key=K --hostname=H` cloud-init runs first on this user data, if any. */
export function parseTailscaleUp(userData: string | null): TailscaleUp | undefined {
  return firstBoot(userData).join;
}
