/**
 * The hostname tailfleet gives an agent's machine: the server name at Hetzner and the device name
 * in the tailnet.
 *
 * It is derived only from the agent (never from a random value) so that a retried or resumed
 * provision looks for the same tailnet device it asked the server to enroll as.
 */

const MAX_LABEL_LENGTH = 63;
const SHORT_ID_LENGTH = 8;

/** A DNS label (RFC 1123): lower-case letters, digits and inner hyphens, at most 63 characters. */
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function isDnsLabel(value: string): boolean {
  return DNS_LABEL.test(value);
}

/**
 * `<name-slug>-<first 8 hex digits of the agent id>`, e.g. `build-box-3f2a9c1d`: the hostname
 * before fleets, and the start of a fleet's hostname (Fleet.hostname adds the fleet mark, whose
 * length is `reserve`). The slug never contains two hyphens in a row.
 */
export function agentHostname(agentName: string, agentId: string, reserve = 0): string {
  const shortId = agentId.replace(/[^0-9a-zA-Z]/g, '').toLowerCase().slice(0, SHORT_ID_LENGTH);
  if (shortId.length === 0) throw new Error(`Agent id ${JSON.stringify(agentId)} has no usable characters`);
  const room = MAX_LABEL_LENGTH - reserve - shortId.length - 1;
  const slug =
    agentName
      .normalize('NFKD')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .slice(0, room)
      .replace(/^-+|-+$/g, '') || 'agent';
  return `${slug}-${shortId}`;
}
