import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';

// The client judges devices by these too; they live beside it so the clients depend on nothing of ours.
export { carriesTags, hostnameMatches } from '../clients/tailscale/devices';

/** The device's tailnet IPv4 address, else its first address. */
export function tailnetIpv4(device: Pick<TailscaleDevice, 'addresses'>): string | null {
  const addresses = device.addresses as string[] | undefined;
  return addresses?.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)) ?? addresses?.[0] ?? null;
}
