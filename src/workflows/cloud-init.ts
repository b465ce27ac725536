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
