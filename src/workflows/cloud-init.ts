import { isDnsLabel } from '../fleet/hostname';

/** First-boot configuration for an agent's server. */

/** Auth keys and hostnames end up in a shell command line; anything else would need quoting. */
const SHELL_SAFE = /^[A-Za-z0-9_-]+$/;

export interface UserDataInput {
  authKey: string;
  hostname: string;
}

/**
 * Cloud-init user data that installs Tailscale and joins the tailnet under `hostname`.
 * The result contains the auth key: pass it to the Hetzner API and nowhere else (not to logs, not
 * to the database, not to job data).
 */
export function buildUserData(input: UserDataInput): string {
  if (!SHELL_SAFE.test(input.authKey)) throw new Error('Auth key contains characters that are not shell-safe');
  if (!isDnsLabel(input.hostname)) throw new Error(`Hostname ${JSON.stringify(input.hostname)} is not a DNS label`);
  return [
    '#cloud-config',
    'runcmd:',
    "  - 'curl -fsSL https://tailscale.com/install.sh | sh'",
    "  - 'systemctl enable --now tailscaled'",
    `  - 'tailscale up --auth-key=${input.authKey} --hostname=${input.hostname}'`,
    '',
  ].join('\n');
}

/** Hetzner refuses user data over 32 KiB; this is after merging the application's own with the join. */
export const USER_DATA_MAX_BYTES = 32 * 1024;

/** What an application's own user data is, by its first line; anything else is refused at the API. */
export function userDataKind(userData: string): 'cloud-config' | 'shell-script' | null {
  if (/^#cloud-config[ \t]*\r?\n/.test(userData) || userData.trim() === '#cloud-config') return 'cloud-config';
  if (userData.startsWith('#!')) return 'shell-script';
  return null;
}

const MIME_TYPES = { 'cloud-config': 'text/cloud-config', 'shell-script': 'text/x-shellscript' } as const;

/**
 * The tailnet join and the application's own user data as one MIME multipart document, which
 * cloud-init runs part by part (the join first). Without own user data the join is sent as it is.
 */
export function mergeUserData(join: string, own: string | null | undefined, boundarySeed = 'tailfleet'): string {
  if (!own) return join;
  const kind = userDataKind(own);
  if (!kind) throw new Error('User data must start with #cloud-config or #! (a shell script)');
  let boundary = `==${boundarySeed}-boundary==`;
  for (let n = 1; join.includes(boundary) || own.includes(boundary); n++) boundary = `==${boundarySeed}-boundary-${n}==`;
  const part = (type: string, name: string, body: string) =>
    [
      `--${boundary}`,
      `Content-Type: ${type}; charset="utf-8"`,
      'MIME-Version: 1.0',
      'Content-Transfer-Encoding: 8bit',
      `Content-Disposition: attachment; filename="${name}"`,
      '',
      body.endsWith('\n') ? body.slice(0, -1) : body,
    ].join('\n');
  return [
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    'MIME-Version: 1.0',
    '',
    part(MIME_TYPES['cloud-config'], 'tailfleet-join.cfg', join),
    part(MIME_TYPES[kind], kind === 'cloud-config' ? 'agent.cfg' : 'agent.sh', own),
    `--${boundary}--`,
    '',
  ].join('\n');
}

// Tailscale auth keys are well under this; the API checks the size with the longest join there can be.
const LONGEST_AUTH_KEY = 'k'.repeat(128);
const LONGEST_HOSTNAME = 'h'.repeat(63);

/** The size of the merged user data with the longest auth key and hostname, for the API's check. */
export function mergedUserDataBytes(own: string): number {
  return Buffer.byteLength(mergeUserData(buildUserData({ authKey: LONGEST_AUTH_KEY, hostname: LONGEST_HOSTNAME }), own));
}

/**
 * User data of a server woken from a snapshot: the restored disk already holds the node's identity
 * (its node key and state), so the machine needs no auth key, only tailscaled running.
 */
export function buildWakeUserData(): string {
  return ['#cloud-config', 'runcmd:', "  - 'systemctl enable --now tailscaled'", ''].join('\n');
}

/**
 * User data of a woken server whose node did not come back (its device was removed or its key
 * revoked): the old state is dropped and the machine joins afresh under the same hostname. Contains
 * the auth key: pass it to the Hetzner API and nowhere else.
 */
export function buildRejoinUserData(input: UserDataInput): string {
  if (!SHELL_SAFE.test(input.authKey)) throw new Error('Auth key contains characters that are not shell-safe');
  if (!isDnsLabel(input.hostname)) throw new Error(`Hostname ${JSON.stringify(input.hostname)} is not a DNS label`);
  return [
    '#cloud-config',
    'runcmd:',
    "  - 'systemctl enable --now tailscaled'",
    `  - 'tailscale up --reset --force-reauth --auth-key=${input.authKey} --hostname=${input.hostname}'`,
    '',
  ].join('\n');
}
