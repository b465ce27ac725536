import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { InvalidInputError } from '../errors';

/**
 * Webhook receivers must be on the public internet: a URL that resolves to a loopback, private,
 * link-local, shared (CGNAT, where tailnet addresses live) or otherwise special address is refused,
 * so a subscription cannot make tailfleet call into its own network. The name is resolved when the
 * subscription is made and again for every delivery, once: every address of that answer is checked
 * and the delivery's socket connects only to those (see receiver-request.ts), so a name re-pointed
 * between the check and the connect gains nothing.
 */

const BLOCKED_V4 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  BLOCKED_V4.addSubnet(net, prefix, 'ipv4');
}

// Only global unicast (2000::/3) is acceptable for IPv6, less these special blocks inside it.
// Outside it lie loopback, unspecified, ULA (fc00::/7), link-local, site-local, multicast, discard
// (100::/64), SRv6 (5f00::/16) and NAT64 local-use (64:ff9b:1::/48, whose embedding each network
// chooses); the forms that carry an IPv4 address are judged by that address first (embeddedIPv4).
const GLOBAL_V6 = new BlockList();
GLOBAL_V6.addSubnet('2000::', 3, 'ipv6');
const BLOCKED_V6 = new BlockList();
for (const [net, prefix] of [
  ['2001:2::', 48], // benchmarking
  ['2001:10::', 28], // ORCHID
  ['2001:20::', 28], // ORCHIDv2
  ['2001:db8::', 32], // documentation
  ['3fff::', 20], // documentation
] as const) {
  BLOCKED_V6.addSubnet(net, prefix, 'ipv6');
}

/** The eight 16-bit words of a valid IPv6 address (a zone id and a dotted IPv4 tail allowed). */
function ipv6Words(address: string): number[] {
  let a = address.replace(/%.*$/, '').toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (dotted) {
    const [b0, b1, b2, b3] = dotted.slice(1).map(Number) as [number, number, number, number];
    a = `${a.slice(0, dotted.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head = '', tail] = a.split('::');
  const headWords = head ? head.split(':') : [];
  const tailWords = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : new Array<string>(8 - headWords.length - tailWords.length).fill('0');
  return [...headWords, ...zeros, ...tailWords].map((w) => parseInt(w, 16));
}

function v4(hi: number, lo: number): string {
  return `${hi >>> 8}.${hi & 255}.${lo >>> 8}.${lo & 255}`;
}

/**
 * The IPv4 addresses an IPv6 address stands for, by the translation and tunnelling schemes that
 * would deliver a packet to them: IPv4-compatible (::a.b.c.d), IPv4-mapped (::ffff:a.b.c.d), SIIT
 * (::ffff:0:a.b.c.d), NAT64 well-known prefix (64:ff9b::/96), 6to4 (2002::/16, the 32 bits after the
 * prefix) and Teredo (2001::/32: the server in bits 32–63, the client in the last 32 bits inverted).
 */
export function embeddedIPv4(address: string): string[] {
  const w = ipv6Words(address);
  const zero = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  if (zero(0, 6)) return [v4(w[6]!, w[7]!)];
  if (zero(0, 5) && w[5] === 0xffff) return [v4(w[6]!, w[7]!)];
  if (zero(0, 4) && w[4] === 0xffff && w[5] === 0) return [v4(w[6]!, w[7]!)];
  if (w[0] === 0x64 && w[1] === 0xff9b && zero(2, 6)) return [v4(w[6]!, w[7]!)];
  if (w[0] === 0x2002) return [v4(w[1]!, w[2]!)];
  if (w[0] === 0x2001 && w[1] === 0) return [v4(w[2]!, w[3]!), v4(~w[6]! & 0xffff, ~w[7]! & 0xffff)];
  return [];
}

/** Whether an address is one a webhook may not be delivered to (anything that is not an IP address included). */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return BLOCKED_V4.check(address, 'ipv4');
  if (family !== 6) return true;
  const carried = embeddedIPv4(address);
  if (carried.length > 0) return carried.some(isPrivateAddress);
  const bare = address.replace(/%.*$/, '');
  return !GLOBAL_V6.check(bare, 'ipv6') || BLOCKED_V6.check(bare, 'ipv6');
}

/** The DNS edge: every address a name has (A and AAAA). Errors carry the resolver's `code`. */
export type Lookup = (host: string) => Promise<string[]>;

const systemLookup: Lookup = async (host) => (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** The URL is not one tailfleet delivers to: bad form, or a refused address. Not worth retrying. */
export class WebhookUrlError extends InvalidInputError {
  override readonly code: string = 'webhook_url_refused';
  constructor(message: string) {
    super(message);
    this.name = 'WebhookUrlError';
  }
}

/**
 * The name did not resolve. At subscription it is a bad URL like any other (400); at delivery it is
 * an ordinary failed attempt, retried: a resolver that times out or answers SERVFAIL (EAI_AGAIN,
 * ETIMEOUT, ESERVFAIL) is as passing as a receiver that does.
 */
export class WebhookDnsError extends WebhookUrlError {
  override readonly permanent = false;
  constructor(
    readonly host: string,
    /** The resolver's code (ENOTFOUND, EAI_AGAIN …). */
    override readonly code: string,
  ) {
    super(`the host ${host} does not resolve (${code})`);
    this.name = 'WebhookDnsError';
  }
}

/** A receiver's URL with the addresses its one resolution gave, every one of them checked. */
export interface Receiver {
  url: URL;
  /** The host without IPv6 brackets: the name TLS verifies and the Host header carries. */
  host: string;
  addresses: Array<{ address: string; family: 4 | 6 }>;
}

export interface GuardOptions {
  /** WEBHOOK_ALLOW_PRIVATE_URLS: no address is refused (tests and private deployments). */
  allowPrivate: boolean;
  lookup?: Lookup;
  /**
   * Which addresses are refused (default isPrivateAddress). Replaced only where a machine has no
   * public address to stand for one: tests that call one loopback address "public".
   */
  refuses?: (address: string) => boolean;
}

function parseWebhookUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new WebhookUrlError('must be an absolute http or https URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new WebhookUrlError('must be an http or https URL');
  if (url.username || url.password) throw new WebhookUrlError('must not carry a user name or password');
  return url;
}

/**
 * Parses the URL and resolves its host once. Throws WebhookUrlError for a bad URL or when any
 * address is refused, WebhookDnsError when the name does not resolve.
 */
export async function resolveReceiver(raw: string, opts: GuardOptions): Promise<Receiver> {
  const url = parseWebhookUrl(raw);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    try {
      addresses = await (opts.lookup ?? systemLookup)(host);
    } catch (err) {
      throw new WebhookDnsError(host, (err as NodeJS.ErrnoException).code ?? 'EDNS');
    }
    addresses = addresses.filter((a) => isIP(a) !== 0);
    if (addresses.length === 0) throw new WebhookDnsError(host, 'ENODATA');
  }
  if (!opts.allowPrivate) {
    const refused = addresses.find(opts.refuses ?? isPrivateAddress);
    if (refused !== undefined) {
      throw new WebhookUrlError(
        `resolves to ${refused}, a loopback, private, link-local or otherwise special address (set WEBHOOK_ALLOW_PRIVATE_URLS=true to allow)`,
      );
    }
  }
  return { url, host, addresses: addresses.map((address) => ({ address, family: isIP(address) as 4 | 6 })) };
}

/**
 * The subscription's check: throws WebhookUrlError when the URL is not http(s), carries
 * credentials, does not resolve, or resolves (any of its addresses) to a refused address. With
 * private URLs allowed the name is not resolved (it may only resolve where the workers run).
 */
export async function checkWebhookUrl(raw: string, opts: GuardOptions): Promise<URL> {
  if (opts.allowPrivate) return parseWebhookUrl(raw);
  return (await resolveReceiver(raw, opts)).url;
}
