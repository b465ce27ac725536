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
