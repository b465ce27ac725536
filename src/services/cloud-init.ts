/**
 * Names and first-boot configuration for an agent's server.
 *
 * The hostname is derived only from the agent (never from a random value) so that a retried or
 * resumed provision looks for the same tailnet device it asked the server to enroll as.
 */

const MAX_LABEL_LENGTH = 63;
const SHORT_ID_LENGTH = 8;

/** A DNS label (RFC 1123): lower-case letters, digits and inner hyphens, at most 63 characters. */
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Auth keys and hostnames end up in a shell command line; anything else would need quoting. */
const SHELL_SAFE = /^[A-Za-z0-9_-]+$/;

export function isDnsLabel(value: string): boolean {
  return DNS_LABEL.test(value);
}

/** `<name-slug>-<first 8 hex digits of the agent id>`, e.g. `build-box-3f2a9c1d`. */
export function agentHostname(agentName: string, agentId: string): string {
  const shortId = agentId.replace(/[^0-9a-zA-Z]/g, '').toLowerCase().slice(0, SHORT_ID_LENGTH);
  if (shortId.length === 0) throw new Error(`Agent id ${JSON.stringify(agentId)} has no usable characters`);
  const room = MAX_LABEL_LENGTH - shortId.length - 1;
  const slug =
    agentName
      .normalize('NFKD')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .slice(0, room)
      .replace(/^-+|-+$/g, '') || 'agent';
  return `${slug}-${shortId}`;
}

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
