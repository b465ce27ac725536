/**
 * The credentials the simulated clouds accept. Like the real APIs, anything else is refused with
 * their own 401 answers, so a deployment pointed at the simulator with a wrong token fails the way
 * it would against Hetzner or Tailscale. The defaults are documented (README, .env.example) and used
 * by the demo, docker-compose.yml, the tests and the benchmarks.
 */
export const SIM_DEFAULT_CREDENTIALS = {
  hetznerToken: 'sim-token',
  tailscaleClientId: 'sim-client',
  tailscaleClientSecret: 'sim-secret',
} as const;

/** The environment that points a tailfleet at a running simulator with the default credentials. */
export function simulatorEnv(sim: { hetznerUrl: string; tailscaleUrl: string }) {
  return {
    HETZNER_API_URL: sim.hetznerUrl,
    HETZNER_API_TOKEN: SIM_DEFAULT_CREDENTIALS.hetznerToken,
    TAILSCALE_API_URL: sim.tailscaleUrl,
    TAILSCALE_OAUTH_CLIENT_ID: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
    TAILSCALE_OAUTH_CLIENT_SECRET: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
  };
}

export interface SimOAuthClient {
  clientId: string;
  clientSecret: string;
}

export interface SimCredentials {
  /** Accepted Hetzner API tokens (a project may have several; rate limits are per token here). */
  hetznerTokens: string[];
  /** Accepted Tailscale OAuth clients. */
  tailscaleClients: SimOAuthClient[];
}

export type SimCredentialsInput = Partial<SimCredentials>;

export function resolveCredentials(input: SimCredentialsInput = {}): SimCredentials {
  const hetznerTokens = input.hetznerTokens ?? [SIM_DEFAULT_CREDENTIALS.hetznerToken];
  const tailscaleClients = input.tailscaleClients ?? [
    { clientId: SIM_DEFAULT_CREDENTIALS.tailscaleClientId, clientSecret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret },
  ];
  if (hetznerTokens.length === 0 || hetznerTokens.some((t) => !t)) throw new Error('simulator: Hetzner tokens must be non-empty');
  if (tailscaleClients.length === 0 || tailscaleClients.some((c) => !c.clientId || !c.clientSecret)) {
    throw new Error('simulator: Tailscale OAuth clients need an id and a secret');
  }
  return { hetznerTokens: [...hetznerTokens], tailscaleClients: tailscaleClients.map((c) => ({ ...c })) };
}

/** `SIM_HETZNER_TOKEN`, `SIM_TAILSCALE_CLIENT_ID`, `SIM_TAILSCALE_CLIENT_SECRET`; unset ones keep their default. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv): SimCredentials {
  return resolveCredentials({
    hetznerTokens: [env.SIM_HETZNER_TOKEN || SIM_DEFAULT_CREDENTIALS.hetznerToken],
    tailscaleClients: [
      {
        clientId: env.SIM_TAILSCALE_CLIENT_ID || SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
        clientSecret: env.SIM_TAILSCALE_CLIENT_SECRET || SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
      },
    ],
  });
}
