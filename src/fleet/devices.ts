import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';

/** Same rule as the client's enrollment lookup: the machine name, or the first label of the MagicDNS name. */
export function hostnameMatches(device: TailscaleDevice, hostname: string): boolean {
  const wanted = hostname.toLowerCase();
  return device.hostname?.toLowerCase() === wanted || device.name?.split('.')[0]?.toLowerCase() === wanted;
}

/** The device's tailnet IPv4 address, else its first address. */
export function tailnetIpv4(device: Pick<TailscaleDevice, 'addresses'>): string | null {
  const addresses = device.addresses as string[] | undefined;
  return addresses?.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)) ?? addresses?.[0] ?? null;
}
