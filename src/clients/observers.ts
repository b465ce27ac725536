import type { Metrics } from '../lib/metrics';
import type { CloudApi } from './errors';
import type { CloudRequestEvent, CloudRequestObserver, CloudRetryEvent } from './http';

/**
 * What watches the clients' requests: the metrics, and whether the clouds accept our credentials.
 * The clients report every attempt to one observer (observeAll puts several together).
 */

export type CredentialState = 'unknown' | 'ok' | 'unauthorized';
export type CredentialStates = Record<CloudApi, CredentialState>;

/** The settings an operator fixes when an API refuses our credentials. */
export const CREDENTIAL_SETTINGS: Record<CloudApi, string> = {
  hetzner: 'HETZNER_API_TOKEN',
  tailscale: 'TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET',
};

/** Tailscale's client credentials are judged only here; other routes may 401 a merely expired access token. */
const TAILSCALE_TOKEN_ROUTE = '/oauth/token';

/**
 * Whether the clouds accept this process's credentials, as last seen by its clients: a 401 marks an
 * API unauthorized, the next success clears it. Readiness reports it, so a deployment with a wrong
 * or revoked token says so on /readyz instead of failing every job quietly. Until a request has
 * been made the state is unknown, which does not hold readiness back.
 */
export class CloudCredentialHealth implements CloudRequestObserver {
  private readonly states: CredentialStates = { hetzner: 'unknown', tailscale: 'unknown' };

  onRequest(e: CloudRequestEvent): void {
    if (typeof e.status !== 'number') return;
    if (e.api === 'tailscale' && e.route !== TAILSCALE_TOKEN_ROUTE) return;
    if (e.status === 401) this.states[e.api] = 'unauthorized';
    else if (e.status >= 200 && e.status < 300) this.states[e.api] = 'ok';
  }

  snapshot(): CredentialStates {
    return { ...this.states };
  }

  /** One sentence per API whose credentials were refused, naming what to fix. */
  problems(): string[] {
    return (Object.keys(this.states) as CloudApi[])
      .filter((api) => this.states[api] === 'unauthorized')
      .map((api) => `${api} rejected the credentials (401): check ${CREDENTIAL_SETTINGS[api]}`);
  }
}

/** One observer that hands every event to each of `observers` (metrics, credential health, …). */
export function observeAll(...observers: Array<CloudRequestObserver | undefined>): CloudRequestObserver {
  const present = observers.filter((o): o is CloudRequestObserver => o !== undefined);
  return {
    onRequest: (e) => {
      for (const o of present) o.onRequest(e);
    },
    onRetry: (e) => {
      for (const o of present) o.onRetry?.(e);
    },
  };
}

/** The clients' requests and retries as metrics: count, latency, 429s, rate-limit headroom, retries. */
export function metricsObserver(m: Metrics): Required<CloudRequestObserver> {
  return {
    onRequest(e: CloudRequestEvent): void {
      const status = String(e.status);
      m.cloudRequests.inc({ api: e.api, method: e.method, route: e.route, status });
      m.cloudRequestDuration.observe({ api: e.api, method: e.method, route: e.route, status }, e.durationMs / 1000);
      if (e.status === 429) m.cloudRateLimited.inc({ api: e.api, route: e.route });
      if (e.rateLimitRemaining !== undefined) m.rateLimitRemaining.set({ api: e.api }, e.rateLimitRemaining);
      if (e.rateLimitLimit !== undefined) m.rateLimitLimit.set({ api: e.api }, e.rateLimitLimit);
    },
    onRetry(e: CloudRetryEvent): void {
      m.cloudRetries.inc({ api: e.api, reason: e.reason });
    },
  };
}
