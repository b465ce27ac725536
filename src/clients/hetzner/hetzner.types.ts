// Shapes follow the official Hetzner Cloud OpenAPI spec; only the fields tailfleet reads are typed
// strictly, the rest are optional so a newer API version does not break parsing.

export type HetznerServerStatus =
  | 'initializing'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'off'
  | 'deleting'
  | 'migrating'
  | 'rebuilding'
  | 'unknown';

export type HetznerActionStatus = 'running' | 'success' | 'error';

export interface HetznerAction {
  id: number;
  command: string;
  status: HetznerActionStatus;
  progress: number;
  started: string;
  finished: string | null;
  resources: Array<{ id: number; type: string }>;
  error: { code: string; message: string } | null;
}

export interface HetznerIpv4 {
  id?: number;
  ip: string;
  blocked: boolean;
  dns_ptr: string;
}

export interface HetznerIpv6 {
  id?: number;
  ip: string;
  blocked: boolean;
  dns_ptr: Array<{ ip: string; dns_ptr: string }> | null;
}

export interface HetznerServer {
  id: number;
  name: string;
  status: HetznerServerStatus;
  created: string;
  public_net: {
    ipv4: HetznerIpv4 | null;
    ipv6: HetznerIpv6 | null;
    floating_ips: number[];
    firewalls?: Array<{ id?: number; status?: 'applied' | 'pending' }>;
  };
  private_net?: Array<{ network?: number; ip?: string; alias_ips?: string[]; mac_address?: string }>;
  server_type?: { id?: number; name: string; cores?: number; memory?: number; disk?: number; [k: string]: unknown };
  location?: { id?: number; name: string; [k: string]: unknown };
  datacenter?: { id?: number; name: string; [k: string]: unknown };
  image?: { id?: number; name?: string | null; [k: string]: unknown } | null;
  labels: Record<string, string>;
  locked?: boolean;
  protection?: { delete: boolean; rebuild: boolean };
  primary_disk_size?: number;
  [k: string]: unknown;
}

export interface HetznerPagination {
  page: number;
  per_page: number;
  previous_page: number | null;
  next_page: number | null;
  last_page: number | null;
  total_entries: number | null;
}

export interface CreateServerOptions {
  name: string;
  serverType: string;
  image: string;
  location?: string;
  sshKeys?: string[];
  userData?: string;
  labels: Record<string, string>;
  /** False: no primary IPv4 (`public_net.enable_ipv4: false`), the server has IPv6 only. Default true. */
  publicIpv4?: boolean;
}

export interface CreateServerResult {
  server: HetznerServer;
  action: HetznerAction;
  nextActions: HetznerAction[];
}

export type ShutdownResult = 'already_off' | 'graceful' | 'forced';
export type PowerOnResult = 'already_running' | 'powered_on';

export type HetznerImageType = 'system' | 'app' | 'snapshot' | 'backup';
export type HetznerImageStatus = 'available' | 'creating' | 'unavailable';

export interface HetznerImage {
  id: number;
  type: HetznerImageType;
  status: HetznerImageStatus;
  name: string | null;
  description: string;
  /** GB in Hetzner's storage: what a snapshot is billed by. Null while it is being created. */
  image_size: number | null;
  /** GB of the disk inside the image: a server made from it needs at least this much. */
  disk_size: number;
  created: string;
  created_from: { id: number; name: string } | null;
  bound_to: number | null;
  labels: Record<string, string>;
  protection?: { delete: boolean };
  deleted?: string | null;
  architecture?: 'x86' | 'arm';
  [k: string]: unknown;
}

export interface CreateImageOptions {
  description?: string;
  labels: Record<string, string>;
}

export interface CreateImageResult {
  image: HetznerImage;
  action: HetznerAction;
}

/** A price as Hetzner quotes it: decimal strings, net and gross (with the project's VAT). */
export interface HetznerPrice {
  net: string;
  gross: string;
}

export interface HetznerLocationPrice {
  location: string;
  price_hourly: HetznerPrice;
  price_monthly: HetznerPrice;
  [k: string]: unknown;
}

export interface HetznerServerType {
  id: number;
  name: string;
  description?: string;
  cores?: number;
  memory?: number;
  /** GB of local disk. */
  disk: number;
  deprecated?: boolean | null;
  prices: HetznerLocationPrice[];
  /** Where the type is offered; `available: false` = temporarily sold out there. */
  locations: Array<{ id: number; name: string; available: boolean; recommended?: boolean; deprecation: { unavailable_after: string; announced: string } | null }>;
  architecture?: 'x86' | 'arm' | string;
  cpu_type?: string;
  [k: string]: unknown;
}

/** GET /pricing, the parts cost reporting reads. */
export interface HetznerPricing {
  currency: string;
  vat_rate: string;
  primary_ips: Array<{ type: 'ipv4' | 'ipv6'; prices: HetznerLocationPrice[] }>;
  image: { price_per_gb_month: HetznerPrice };
  server_types: Array<{ id: number; name: string; prices: HetznerLocationPrice[] }>;
  [k: string]: unknown;
}

/** GET /locations. */
export interface HetznerLocation {
  id: number;
  name: string;
  description: string;
  country: string;
  city: string;
  network_zone: string;
  [k: string]: unknown;
}
