import type { TailscaleDevice } from './tailscale.types';

/** The machine name, or the first label of the MagicDNS name (`agent-1` in `agent-1.tail123.ts.net`). */
export function hostnameMatches(device: Pick<TailscaleDevice, 'hostname' | 'name'>, hostname: string): boolean {
  const wanted = hostname.toLowerCase();
  return device.hostname?.toLowerCase() === wanted || device.name?.split('.')[0]?.toLowerCase() === wanted;
}

/**
 * Whether the device carries every one of the fleet's tags (TAILSCALE_TAGS). Our auth keys make
 * tagged devices only, so a device without them did not join with one of ours. No tags configured
 * matches nothing.
 */
export function carriesTags(device: Pick<TailscaleDevice, 'tags'>, tags: readonly string[]): boolean {
  const have = device.tags ?? [];
  return tags.length > 0 && tags.every((t) => have.includes(t));
}
