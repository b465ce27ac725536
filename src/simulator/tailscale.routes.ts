import { routedApi, type ApiModule } from './api-module';
import { BodyParseError, Router, bearerToken, parseJsonBody, type SimRequest, type SimResponse } from './router';
import type { CloudSimulator } from './simulator';
import { TailscaleApiError } from './tailnet.model';

export const TAILSCALE_PREFIX = '/tailscale/api/v2';

interface ClientCredentials {
  grantType?: string;
  clientId?: string;
  clientSecret?: string;
  scope?: string;
}

/** Client credentials from a form or JSON body, or from HTTP Basic auth (RFC 6749 allows both). */
function readCredentials(req: SimRequest): ClientCredentials {
  const creds: ClientCredentials = {};
  const contentType = String(req.headers['content-type'] ?? '');
  if (contentType.includes('application/json')) {
    const b = jsonBody(req);
    if (typeof b === 'object' && b !== null) {
      const o = b as Record<string, unknown>;
      const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
      Object.assign(creds, {
        grantType: str(o.grant_type),
        clientId: str(o.client_id),
        clientSecret: str(o.client_secret),
        scope: str(o.scope),
      });
    }
  } else {
    const form = new URLSearchParams(req.rawBody);
    creds.grantType = form.get('grant_type') ?? undefined;
    creds.clientId = form.get('client_id') ?? undefined;
    creds.clientSecret = form.get('client_secret') ?? undefined;
    creds.scope = form.get('scope') ?? undefined;
  }
  const basic = /^Basic\s+(\S+)$/i.exec(String(req.headers.authorization ?? ''));
  if (basic && !creds.clientId) {
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      creds.clientId = decodeURIComponent(decoded.slice(0, colon));
      creds.clientSecret = decodeURIComponent(decoded.slice(colon + 1));
    }
  }
  return creds;
}

export function createTailscaleApi(sim: CloudSimulator): ApiModule {
  const t = sim.tailnet;
  const router = new Router();
  const P = TAILSCALE_PREFIX;
  const ok = (body?: unknown): SimResponse => ({ status: 200, body });

  // `{tailnet}` is accepted whatever it says: `-` (the token's tailnet) or a name, all map to the one simulated tailnet.
  router
    .add('POST', `${P}/oauth/token`, (req) => {
      const creds = readCredentials(req);
      if (creds.grantType !== undefined && creds.grantType !== 'client_credentials') {
        return { status: 400, body: { error: 'unsupported_grant_type', message: 'grant_type must be client_credentials' } };
      }
      try {
        const { accessToken, expiresIn } = t.issueToken(creds.clientId ?? '', creds.clientSecret ?? '', sim.now());
        return ok({ access_token: accessToken, token_type: 'Bearer', expires_in: expiresIn, scope: creds.scope ?? 'all' });
      } catch (err) {
        if (err instanceof TailscaleApiError) return { status: err.status, body: { message: err.message } };
        throw err;
      }
    })
    .add('GET', `${P}/tailnet/{tailnet}/devices`, () => {
      sim.now();
      return ok({ devices: [...t.devices.values()].map((d) => t.deviceBody(d)) });
    })
    .add('GET', `${P}/device/{deviceId}`, (req) => {
      sim.now();
      const device = t.findDevice(req.params.deviceId);
      if (!device) throw new TailscaleApiError(404, 'device not found');
      return ok(t.deviceBody(device));
    })
    .add('DELETE', `${P}/device/{deviceId}`, (req) => {
      sim.now();
      if (!t.deleteDevice(req.params.deviceId)) throw new TailscaleApiError(404, 'device not found');
      return ok();
    })
    .add('POST', `${P}/device/{deviceId}/ip`, (req) => {
      sim.now();
      const body = jsonBody(req);
      const ipv4 = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).ipv4 : undefined;
      t.setDeviceIpv4(req.params.deviceId, ipv4);
      return ok();
    })
    .add('POST', `${P}/tailnet/{tailnet}/keys`, (req) => {
      const now = sim.now();
      return ok(t.keyBody(t.createKey(jsonBody(req), now), now, true));
    })
    .add('GET', `${P}/tailnet/{tailnet}/keys`, () => {
      const now = sim.now();
      const active = [...t.keys.values()].filter((k) => t.keyProblem(k, now) === undefined);
      return ok({ keys: active.map((k) => t.keyBody(k, now, false)) });
    })
    .add('GET', `${P}/tailnet/{tailnet}/keys/{keyId}`, (req) => {
      const now = sim.now();
      return ok(t.keyBody(t.getKey(req.params.keyId), now, false));
    })
    .add('DELETE', `${P}/tailnet/{tailnet}/keys/{keyId}`, (req) => {
      t.deleteKey(req.params.keyId, sim.now());
      return ok();
    });

  // Every route but the token exchange needs a live access token.
  const authenticated = (req: SimRequest, template: string) => {
    if (template !== `${P}/oauth/token`) t.authenticate(bearerToken(req), sim.now());
  };
  return routedApi(P, router, {
    check: authenticated,
    failed: (err) => (err instanceof TailscaleApiError ? { status: err.status, body: { message: err.message } } : undefined),
    unrouted: (status) => ({ status, body: { message: status === 404 ? 'not found' : 'method not allowed' } }),
    injectedError: (status, _code, message) => ({ status, body: { message: message ?? 'injected fault' } }),
  });
}

function jsonBody(req: SimRequest): unknown {
  try {
    return parseJsonBody(req);
  } catch (err) {
    if (err instanceof BodyParseError) throw new TailscaleApiError(400, err.message);
    throw err;
  }
}
