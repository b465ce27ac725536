export interface TailscaleUp {
  authKey: string;
  /** From `--hostname`; undefined = the machine's own hostname (the server name). */
  hostname?: string;
}

const FLAG_VALUE = String.raw`(?:=|\s+)(?:"([^"]*)"|'([^']*)'|([^\s"'\],]+))`;
const AUTH_KEY = new RegExp(String.raw`--auth-?key` + FLAG_VALUE);
const HOSTNAME = new RegExp(String.raw`--hostname` + FLAG_VALUE);

/**
 * Finds `tailscale up --auth-key=K --hostname=H` in cloud-init user data, in a shell script, a
 * runcmd string or a runcmd list (`[tailscale, up, "--auth-key=K"]`), with `--authkey` and quotes.
 */
export function parseTailscaleUp(userData: string | null): TailscaleUp | undefined {
  if (!userData) return undefined;
  const parts = userDataParts(userData);
  if (parts.length > 1 || parts[0]?.type !== null) {
    for (const part of parts) {
      if (part.type !== 'text/cloud-config' && part.type !== 'text/x-shellscript') continue;
      const found = parseTailscaleUp(part.body);
      if (found) return found;
    }
    return undefined;
  }
  // Shell line continuations would otherwise split one command over several lines.
  const text = userData.replace(/\\\r?\n/g, ' ');
  const start = /tailscale\W+up\b/.exec(text);
  if (!start) return undefined;
  const rest = text.slice(start.index);
  const key = AUTH_KEY.exec(rest);
  if (!key) return undefined;
  const host = HOSTNAME.exec(rest);
  return {
    authKey: key[1] ?? key[2] ?? key[3],
    hostname: host ? (host[1] ?? host[2] ?? host[3]) : undefined,
  };
}

export interface UserDataPart {
  /** The part's Content-Type without parameters; null for plain (non-MIME) user data. */
  type: string | null;
  body: string;
}

/**
 * Splits MIME multipart user data (as cloud-init reads it) into its parts; anything else is one
 * part of type null. Only what cloud-init needs: a boundary, part headers and bodies.
 */
export function userDataParts(userData: string): UserDataPart[] {
  const header = /^Content-Type:\s*multipart\/mixed;\s*boundary="?([^"\r\n;]+)"?/im.exec(userData.split(/\r?\n\r?\n/)[0] ?? '');
  if (!header || !/^Content-Type:/i.test(userData)) return [{ type: null, body: userData }];
  const boundary = header[1]!;
  const chunks = userData.split(new RegExp(`^--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(--)?[ \t]*\r?$`, 'm'));
  const parts: UserDataPart[] = [];
  // chunks: preamble, then per part its text and the (undefined or "--") capture.
  for (let i = 2; i < chunks.length; i += 2) {
    if (chunks[i - 1] === '--') break;
    const text = chunks[i]!.replace(/^\r?\n/, '');
    const split = /\r?\n\r?\n/.exec(text);
    if (!split) continue;
    const headers = text.slice(0, split.index);
    const type = /^Content-Type:\s*([^;\r\n]+)/im.exec(headers)?.[1]?.trim().toLowerCase() ?? 'text/plain';
    parts.push({ type, body: text.slice(split.index + split[0].length) });
  }
  return parts;
}
