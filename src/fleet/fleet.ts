import { createHash } from 'node:crypto';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { agentHostname } from './hostname';
import { FLEET_LABEL, MANAGED_LABEL } from './server-labels';

/**
 * A fleet is one tailfleet deployment (FLEET_NAME). Several may share a Hetzner project and a
 * tailnet; each only ever finds, judges, repairs or deletes its own machines. What marks them:
 *
 * - servers carry `tailfleet-fleet=<name>` beside `managed-by=tailfleet`. A managed server without
 *   the fleet label (made before fleets existed) belongs to the fleet named `default`;
 * - devices join the tailnet under `<agent slug>-<8 hex of the agent id>--<fleet code>`, the fleet
 *   code being the first 6 hex digits of SHA-256 of the fleet name. The double hyphen never occurs
 *   in the part before it (the agent slug collapses runs of other characters into one hyphen). A
 *   device whose hostname carries no `--` (the form before fleets existed, or a name given by hand)
 *   belongs to the fleet named `default`.
 *
 * Devices must also carry every configured tag before any fleet judges them (src/reconcile).
 */

export const DEFAULT_FLEET_NAME = 'default';

/** A Hetzner label value: 1–63 characters, letters or digits at both ends, `-`, `_`, `.` inside. */
export const FLEET_NAME_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

const FLEET_MARK = '--';
const CODE_LENGTH = 6;

export class Fleet {
  readonly name: string;
  /** Short stable form of the name, safe in a DNS label: what a device hostname carries. */
  readonly code: string;
  readonly isDefault: boolean;

  constructor(name: string = DEFAULT_FLEET_NAME) {
    if (!FLEET_NAME_PATTERN.test(name)) throw new Error(`Fleet name ${JSON.stringify(name)} is not a valid Hetzner label value`);
    this.name = name;
    this.code = fleetCode(name);
    this.isDefault = name === DEFAULT_FLEET_NAME;
  }

  /** The label that names this fleet on every server it creates. */
  labels(): Record<string, string> {
    return { [FLEET_LABEL]: this.name };
  }

  /**
   * A label selector for this fleet's managed servers, narrowed by `extra` terms. The default
   * fleet's selector leaves the fleet term out, because Hetzner cannot select "label absent or
   * equal to default" in one listing: callers filter with ownsServer (listServers below does).
   */
  selector(extra: readonly string[] = []): string {
    const terms = [`${MANAGED_LABEL.key}=${MANAGED_LABEL.value}`];
    if (!this.isDefault) terms.push(`${FLEET_LABEL}=${this.name}`);
    return [...terms, ...extra].join(',');
  }

  /** True for a server tailfleet manages and that belongs to this fleet (see the rule above). */
  ownsServer(server: Pick<HetznerServer, 'labels'>): boolean {
    const labels = server.labels ?? {};
    if (labels[MANAGED_LABEL.key] !== MANAGED_LABEL.value) return false;
    const fleet = labels[FLEET_LABEL];
    return fleet === undefined ? this.isDefault : fleet === this.name;
  }

  /**
   * This fleet's managed servers matching the extra selector terms; `shared`: from a listing
   * concurrent callers share, taken after this call (HetznerClient.listServersShared).
   */
  async listServers(
    hetzner: Pick<HetznerClient, 'listServers'> & Partial<Pick<HetznerClient, 'listServersShared'>>,
    extra: readonly string[] = [],
    o: { shared?: boolean } = {},
  ): Promise<HetznerServer[]> {
    const selector = this.selector(extra);
    const servers = o.shared && hetzner.listServersShared ? await hetzner.listServersShared(selector) : await hetzner.listServers(selector);
    return servers.filter((s) => this.ownsServer(s));
  }

  /** An instance's hostname: the one recorded, else the one this fleet gives the agent. */
  hostnameOf(instance: { tailscaleHostname: string | null }, agent: { name: string; id: string }): string {
    return instance.tailscaleHostname ?? this.hostname(agent.name, agent.id);
  }

  /** The hostname a new machine of this fleet gets: also its server name. */
  hostname(agentName: string, agentId: string): string {
    const suffix = `${FLEET_MARK}${this.code}`;
    return `${agentHostname(agentName, agentId, suffix.length)}${suffix}`;
  }

  /** True when a device hostname marks the device as this fleet's (see the rule above). */
  ownsHostname(hostname: string | null | undefined): boolean {
    const mark = fleetMarkOf(hostname ?? '');
    return mark === null ? this.isDefault : mark === this.code;
  }

  ownsDevice(device: Pick<TailscaleDevice, 'hostname'>): boolean {
    return this.ownsHostname(device.hostname);
  }
}

export function fleetCode(name: string): string {
  return createHash('sha256').update(name).digest('hex').slice(0, CODE_LENGTH);
}

/** The fleet code a hostname carries after its `--`, or null for a hostname without one. */
function fleetMarkOf(hostname: string): string | null {
  const at = hostname.lastIndexOf(FLEET_MARK);
  return at < 0 ? null : hostname.slice(at + FLEET_MARK.length).toLowerCase();
}
