// Shapes follow the Tailscale API v2 OpenAPI spec (Device, Key).

export interface TailscaleDevice {
  id: string;
  nodeId: string;
  hostname: string;
  /** MagicDNS name, e.g. `agent-1.tail1234.ts.net`. */
  name: string;
  addresses: string[];
  tags?: string[];
  created: string;
  lastSeen?: string;
  user?: string;
  os?: string;
  clientVersion?: string;
  authorized?: boolean;
  isEphemeral?: boolean;
  connectedToControl?: boolean;
  expires?: string;
  keyExpiryDisabled?: boolean;
  [k: string]: unknown;
}

export interface TailscaleKeyCapabilities {
  devices?: {
    create?: { reusable?: boolean; ephemeral?: boolean; preauthorized?: boolean; tags?: string[] };
  };
}

export interface TailscaleKey {
  id: string;
  /** Secret key material; only present in the create response. */
  key?: string;
  keyType?: string;
  expirySeconds?: number;
  created?: string;
  expires?: string;
  revoked?: string;
  invalid?: boolean;
  description?: string;
  capabilities?: TailscaleKeyCapabilities;
  tags?: string[];
}

export interface CreatedAuthKey {
  id: string;
  key: string;
  expires?: string;
}

export interface OAuthTokenResponse {
  access_token: string;
  token_type?: string;
  expires_in?: number;
  scope?: string;
}
