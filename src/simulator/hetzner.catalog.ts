// Static Hetzner catalog data, enough for response bodies to have the official shape.

export interface LocationInfo {
  id: number;
  name: string;
  description: string;
  country: string;
  city: string;
  latitude: number;
  longitude: number;
  network_zone: string;
}

export const LOCATIONS: Record<string, LocationInfo> = {
  fsn1: { id: 1, name: 'fsn1', description: 'Falkenstein DC Park 1', country: 'DE', city: 'Falkenstein', latitude: 50.47612, longitude: 12.370071, network_zone: 'eu-central' },
  nbg1: { id: 2, name: 'nbg1', description: 'Nuremberg DC Park 1', country: 'DE', city: 'Nuremberg', latitude: 49.452102, longitude: 11.076665, network_zone: 'eu-central' },
  hel1: { id: 3, name: 'hel1', description: 'Helsinki DC Park 1', country: 'FI', city: 'Helsinki', latitude: 60.169855, longitude: 24.938379, network_zone: 'eu-central' },
  ash: { id: 4, name: 'ash', description: 'Ashburn, VA', country: 'US', city: 'Ashburn, VA', latitude: 39.043757, longitude: -77.487442, network_zone: 'us-east' },
  hil: { id: 5, name: 'hil', description: 'Hillsboro, OR', country: 'US', city: 'Hillsboro, OR', latitude: 45.54222, longitude: -122.951924, network_zone: 'us-west' },
  sin: { id: 6, name: 'sin', description: 'Singapore', country: 'SG', city: 'Singapore', latitude: 1.283333, longitude: 103.833333, network_zone: 'ap-southeast' },
};

export const DEFAULT_LOCATION = 'fsn1';

/** Data center names as Hetzner spells them (`fsn1-dc14`), used to accept the deprecated `datacenter` field. */
const DATACENTER_NUMBERS: Record<string, number> = { fsn1: 14, nbg1: 3, hel1: 2, ash: 1, hil: 1, sin: 1 };

export type Architecture = 'x86' | 'arm';

interface ServerTypeSpec {
  id: number;
  /** Where the type is offered (absent: every location). */
  locations?: string[];
  /** Locations where it is offered but temporarily sold out (`available: false`). */
  soldOut?: string[];
  cores: number;
  memory: number;
  disk: number;
  cpu_type: 'shared' | 'dedicated';
  architecture: Architecture;
  hourly: string;
  monthly: string;
}

const SERVER_TYPES: Record<string, ServerTypeSpec> = {
  cx22: { id: 104, cores: 2, memory: 4, disk: 40, cpu_type: 'shared', architecture: 'x86', hourly: '0.0060', monthly: '3.7900' },
  cx32: { id: 105, cores: 4, memory: 8, disk: 80, cpu_type: 'shared', architecture: 'x86', hourly: '0.0110', monthly: '6.8000' },
  cx42: { id: 106, cores: 8, memory: 16, disk: 160, cpu_type: 'shared', architecture: 'x86', hourly: '0.0270', monthly: '16.4000' },
  cx23: { id: 114, cores: 2, memory: 4, disk: 40, cpu_type: 'shared', architecture: 'x86', hourly: '0.0060', monthly: '3.4900' },
  cpx11: { id: 22, cores: 2, memory: 2, disk: 40, cpu_type: 'shared', architecture: 'x86', hourly: '0.0070', monthly: '4.3500' },
  cpx21: { id: 23, cores: 3, memory: 4, disk: 80, cpu_type: 'shared', architecture: 'x86', hourly: '0.0130', monthly: '7.7000' },
  cpx22: { id: 116, cores: 2, memory: 4, disk: 80, cpu_type: 'shared', architecture: 'x86', hourly: '0.0110', monthly: '6.4900' },
  cpx31: { id: 24, cores: 4, memory: 8, disk: 160, cpu_type: 'shared', architecture: 'x86', hourly: '0.0230', monthly: '13.6000' },
  cax11: { id: 45, locations: ['fsn1', 'nbg1', 'hel1'], cores: 2, memory: 4, disk: 40, cpu_type: 'shared', architecture: 'arm', hourly: '0.0060', monthly: '3.7900' },
  cax21: { id: 93, locations: ['fsn1', 'nbg1', 'hel1'], cores: 4, memory: 8, disk: 80, cpu_type: 'shared', architecture: 'arm', hourly: '0.0110', monthly: '6.4900' },
  ccx13: { id: 96, soldOut: ['sin'], cores: 2, memory: 8, disk: 80, cpu_type: 'dedicated', architecture: 'x86', hourly: '0.0230', monthly: '13.9900' },
};

export function serverTypeBody(name: string) {
  const t = SERVER_TYPES[name];
  const price = (loc: string) => ({
    location: loc,
    price_hourly: { net: t.hourly, gross: gross(t.hourly) },
    price_monthly: { net: t.monthly, gross: gross(t.monthly) },
    included_traffic: 21990232555520,
    price_per_tb_traffic: { net: '1.0000', gross: '1.1900' },
  });
  const locations = Object.values(LOCATIONS).filter((l) => !t.locations || t.locations.includes(l.name));
  return {
    id: t.id,
    name,
    description: name.toUpperCase(),
    cores: t.cores,
    memory: t.memory,
    disk: t.disk,
    deprecated: false,
    prices: locations.map((l) => price(l.name)),
    storage_type: 'local',
    cpu_type: t.cpu_type,
    category: t.cpu_type === 'dedicated' ? 'Dedicated vCPU' : 'Shared vCPU',
    architecture: t.architecture,
    locations: locations.map((l) => {
      const available = !t.soldOut?.includes(l.name);
      return { id: l.id, name: l.name, deprecation: null, available, recommended: available };
    }),
  };
}

/** Whether a type (a name from the catalog) is offered and available in a location. */
export function serverTypeAvailability(name: string, location: string): 'available' | 'unsupported' | 'sold_out' {
  const t = SERVER_TYPES[name];
  if (t.locations && !t.locations.includes(location)) return 'unsupported';
  return t.soldOut?.includes(location) ? 'sold_out' : 'available';
}

export function serverTypeDisk(name: string): number {
  return SERVER_TYPES[name].disk;
}

export function serverTypeArchitecture(name: string): Architecture {
  return SERVER_TYPES[name].architecture;
}

function gross(net: string): string {
  return (Number(net) * 1.19).toFixed(4);
}

/** Every named server type, in id order: GET /server_types. */
export function serverTypeNames(): string[] {
  return Object.entries(SERVER_TYPES)
    .sort(([, a], [, b]) => a.id - b.id)
    .map(([name]) => name);
}

export function serverTypeById(id: number): string | undefined {
  return Object.entries(SERVER_TYPES).find(([, t]) => t.id === id)?.[0];
}

/**
 * Where the API takes "ID or name" (`server_type`, `location`, `image`, `ssh_keys`, `datacenter`):
 * a JSON number is an id; a string is a name first and, when all digits, an id.
 */
export function byIdOrName<T>(ref: string | number, byName: (name: string) => T | undefined, byId: (id: number) => T | undefined): T | undefined {
  if (typeof ref === 'number') return Number.isSafeInteger(ref) && ref > 0 ? byId(ref) : undefined;
  const named = byName(ref);
  if (named !== undefined) return named;
  const id = parseId(ref);
  return id === undefined ? undefined : byId(id);
}

/** An id in a path or a reference: a positive integer without sign, leading zeros or exponent. */
export function parseId(raw: string): number | undefined {
  if (!/^[1-9][0-9]{0,15}$/.test(raw)) return undefined;
  return Number(raw);
}

/** A server type's name from its id or name; undefined when the catalog has no such type. */
export function findServerType(ref: string | number): string | undefined {
  return byIdOrName(ref, (name) => (Object.hasOwn(SERVER_TYPES, name) ? name : undefined), serverTypeById);
}

/** A location's name from its id or name. */
export function findLocation(ref: string | number): string | undefined {
  return byIdOrName(
    ref,
    (name) => (Object.hasOwn(LOCATIONS, name) ? name : undefined),
    (id) => Object.values(LOCATIONS).find((l) => l.id === id)?.name,
  );
}

/** A data center's name (`fsn1-dc14`) and id, as a server's `datacenter` shows them. */
export function datacenterOf(location: string): { id: number; name: string; number: number } {
  const number = DATACENTER_NUMBERS[location];
  return { id: LOCATIONS[location].id * 10 + number, name: `${location}-dc${number}`, number };
}

/** The location of a data center given by id or name; undefined when there is no such data center. */
export function findDatacenterLocation(ref: string | number): string | undefined {
  const locations = Object.keys(LOCATIONS);
  return byIdOrName(
    ref,
    (name) => locations.find((l) => datacenterOf(l).name === name),
    (id) => locations.find((l) => datacenterOf(l).id === id),
  );
}

/** Monthly, net: Hetzner's primary IPv4 address price (IPv6 is free), and a snapshot's price per GB. */
const PRIMARY_IPV4_MONTHLY = '0.5000';
const PRIMARY_IPV4_HOURLY = '0.0008';
const IMAGE_PER_GB_MONTHLY = '0.0110';
export const VAT_RATE = '19.00';

const price = (net: string) => ({ net, gross: gross(net) });

/** GET /pricing, in the official shape (EUR, 19 % VAT). */
export function pricingBody() {
  const locations = Object.values(LOCATIONS).map((l) => l.name);
  const perLocation = (hourly: string, monthly: string) =>
    locations.map((location) => ({ location, price_hourly: price(hourly), price_monthly: price(monthly) }));
  return {
    currency: 'EUR',
    vat_rate: VAT_RATE,
    primary_ips: [
      { type: 'ipv4', prices: perLocation(PRIMARY_IPV4_HOURLY, PRIMARY_IPV4_MONTHLY) },
      { type: 'ipv6', prices: perLocation('0.0000', '0.0000') },
    ],
    floating_ips: [
      { type: 'ipv4', prices: locations.map((location) => ({ location, price_monthly: price('3.0000') })) },
      { type: 'ipv6', prices: locations.map((location) => ({ location, price_monthly: price('3.0000') })) },
    ],
    image: { price_per_gb_month: price(IMAGE_PER_GB_MONTHLY) },
    volume: { price_per_gb_month: price('0.0440') },
    server_backup: { percentage: '20.00' },
    server_types: serverTypeNames().map((name) => {
      const body = serverTypeBody(name);
      return { id: body.id, name, prices: body.prices };
    }),
    load_balancer_types: [
      {
        id: 1,
        name: 'lb11',
        prices: locations.map((location) => ({
          location,
          price_hourly: price('0.0080'),
          price_monthly: price('5.3900'),
          included_traffic: 21990232555520,
          price_per_tb_traffic: price('1.0000'),
        })),
      },
    ],
    floating_ip: { price_monthly: price('3.0000') },
  };
}

export interface SystemImage {
  id: number;
  name: string;
  description: string;
  architecture: Architecture;
  osFlavor: string;
  osVersion: string;
  created: string;
}

// As on Hetzner, one name has an image per architecture, each with its own id; a server created by
// name gets the one for its type's architecture.
const SYSTEM_IMAGE_RELEASES = [
  { name: 'ubuntu-24.04', description: 'Ubuntu 24.04', osFlavor: 'ubuntu', osVersion: '24.04', created: '2024-04-25T13:01:04Z', ids: { x86: 161547269, arm: 161547270 } },
  { name: 'ubuntu-22.04', description: 'Ubuntu 22.04', osFlavor: 'ubuntu', osVersion: '22.04', created: '2022-04-21T13:32:38Z', ids: { x86: 67794396, arm: 103908070 } },
  { name: 'debian-12', description: 'Debian 12', osFlavor: 'debian', osVersion: '12', created: '2023-06-13T06:00:02Z', ids: { x86: 114690387, arm: 114690389 } },
] as const;

/** The system images: every name in each architecture, in id order. */
export const SYSTEM_IMAGES: SystemImage[] = SYSTEM_IMAGE_RELEASES.flatMap(({ ids, ...release }) =>
  (['x86', 'arm'] as const).map((architecture) => ({ ...release, id: ids[architecture], architecture })),
).sort((a, b) => a.id - b.id);

export function systemImageById(id: number): SystemImage | undefined {
  return SYSTEM_IMAGES.find((i) => i.id === id);
}

export function systemImageByName(name: string, architecture: Architecture): SystemImage | undefined {
  return SYSTEM_IMAGES.find((i) => i.name === name && i.architecture === architecture);
}
