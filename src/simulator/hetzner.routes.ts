import { DEFAULT_ERROR_CODES, type ApiModule } from './api-module';
import { pricingBody, serverTypeBody, serverTypeById } from './hetzner.catalog';
import { HetznerApiError, parseId, type ActionRecord, type Pagination, type PowerAction } from './hetzner.model';
import { BodyParseError, Router, bearerToken, parseJsonBody, type SimRequest, type SimResponse } from './router';
import type { CloudSimulator, SimProject } from './simulator';

export const HETZNER_PREFIX = '/hetzner/v1';
const POWER_ACTIONS: PowerAction[] = ['shutdown', 'poweron', 'poweroff', 'reboot', 'reset'];

function errorBody(code: string, message: string, details: unknown = null) {
  return { error: { code, message, details } };
}

function idParam(req: SimRequest, name: string, what: string): number {
  const id = parseId(req.params[name]);
  if (id === undefined) throw new HetznerApiError(404, 'not_found', `${what} with ID '${req.params[name]}' not found`);
  return id;
}

/** Hetzner's `Link` header next to `meta.pagination`. */
/** A page of a listing as Hetzner answers it: the items under their key, the pagination in `meta` and in Link. */
function listPage(req: SimRequest, key: string, page: { items: unknown[]; pagination: Pagination }): SimResponse {
  return { status: 200, body: { [key]: page.items, meta: { pagination: page.pagination } }, headers: linkHeader(req, page.pagination) };
}

function linkHeader(req: SimRequest, p: Pagination): Record<string, string> {
  const link = (page: number, rel: string) => {
    const q = new URLSearchParams(req.query);
    q.set('page', String(page));
    q.set('per_page', String(p.per_page));
    return `<${req.path}?${q.toString()}>; rel="${rel}"`;
  };
  const parts: string[] = [];
  if (p.previous_page !== null) parts.push(link(p.previous_page, 'prev'));
  if (p.next_page !== null) parts.push(link(p.next_page, 'next'));
  if (p.last_page !== null) parts.push(link(p.last_page, 'last'));
  return parts.length > 0 ? { Link: parts.join(', ') } : {};
}

export function createHetznerApi(sim: CloudSimulator): ApiModule {
  // The project of the request being answered: set from its token before its handler runs (handlers are synchronous).
  let p: SimProject = sim.projects[0];
  const router = new Router();
  const P = HETZNER_PREFIX;
  const actionList = (req: SimRequest, items: ActionRecord[], pagination: Pagination, now: number): SimResponse =>
    listPage(req, 'actions', { items: items.map((a) => p.hetzner.actionBody(a, now)), pagination });
  // The query parameters listings share; each store reads those its listing takes.
  const listParams = (req: SimRequest) => ({
    name: req.query.get('name') ?? undefined,
    labelSelector: req.query.get('label_selector') ?? undefined,
    status: req.query.getAll('status'),
    sort: req.query.getAll('sort'),
    page: req.query.get('page') ?? undefined,
    perPage: req.query.get('per_page') ?? undefined,
  });

  router
    .add('POST', `${P}/servers`, (req) => {
      const input = p.hetzner.parseCreateBody(jsonBody(req));
      const now = sim.now();
      const { server, action, nextActions } = p.hetzner.createServer(input, now);
      return {
        status: 201,
        body: {
          server: p.hetzner.serverBody(server),
          action: p.hetzner.actionBody(action, now),
          next_actions: nextActions.map((a) => p.hetzner.actionBody(a, now)),
          // Hetzner only mails/returns a root password when no SSH key is given.
          root_password: server.sshKeys.length > 0 ? null : sim.random.string(20),
        },
      };
    })
    .add('GET', `${P}/servers`, (req) => {
      sim.now();
      const { items, pagination } = p.hetzner.listServers(listParams(req));
      return listPage(req, 'servers', { items: items.map((s) => p.hetzner.serverBody(s)), pagination });
    })
    .add('GET', `${P}/servers/{id}`, (req) => {
      sim.now();
      return { status: 200, body: { server: p.hetzner.serverBody(p.hetzner.getServer(idParam(req, 'id', 'server'))) } };
    })
    .add('PUT', `${P}/servers/{id}`, (req) => {
      sim.now();
      return { status: 200, body: { server: p.hetzner.serverBody(p.hetzner.updateServer(idParam(req, 'id', 'server'), jsonBody(req))) } };
    })
    .add('DELETE', `${P}/servers/{id}`, (req) => {
      const now = sim.now();
      return { status: 200, body: { action: p.hetzner.actionBody(p.hetzner.deleteServer(idParam(req, 'id', 'server'), now), now) } };
    })
    .add('GET', `${P}/servers/actions/{id}`, (req) => {
      const now = sim.now();
      return { status: 200, body: { action: p.hetzner.actionBody(p.hetzner.getAction(idParam(req, 'id', 'action')), now) } };
    })
    .add('GET', `${P}/servers/{id}/actions`, (req) => {
      const now = sim.now();
      const { items, pagination } = p.hetzner.listActions({ ids: [], ...listParams(req) }, idParam(req, 'id', 'server'));
      return actionList(req, items, pagination, now);
    })
    .add('GET', `${P}/servers/{id}/actions/{action_id}`, (req) => {
      const now = sim.now();
      const serverId = idParam(req, 'id', 'server');
      const action = p.hetzner.getAction(idParam(req, 'action_id', 'action'), serverId);
      return { status: 200, body: { action: p.hetzner.actionBody(action, now) } };
    })
    .add('GET', `${P}/actions`, (req) => {
      const now = sim.now();
      const { items, pagination } = p.hetzner.listActions({ ids: req.query.getAll('id'), ...listParams(req) });
      return actionList(req, items, pagination, now);
    })
    .add('GET', `${P}/server_types`, (req) => {
      sim.now();
      const { items, pagination } = p.hetzner.listServerTypes(listParams(req));
      return listPage(req, 'server_types', { items, pagination });
    })
    .add('GET', `${P}/locations`, (req) => {
      sim.now();
      const { items, pagination } = p.hetzner.listLocations(listParams(req));
      return listPage(req, 'locations', { items, pagination });
    })
    .add('GET', `${P}/actions/{id}`, (req) => {
      const now = sim.now();
      return { status: 200, body: { action: p.hetzner.actionBody(p.hetzner.getAction(idParam(req, 'id', 'action')), now) } };
    });
  router
    .add('POST', `${P}/servers/{id}/actions/create_image`, (req) => {
      const now = sim.now();
      const { image, action } = p.hetzner.createImage(idParam(req, 'id', 'server'), jsonBody(req), now);
      return { status: 201, body: { image: p.hetzner.imageBody(image), action: p.hetzner.actionBody(action, now) } };
    })
    .add('GET', `${P}/images`, (req) => {
      sim.now();
      const { items, pagination } = p.hetzner.listImages({
        ...listParams(req),
        type: req.query.getAll('type'),
        architecture: req.query.get('architecture') ?? undefined,
      });
      return listPage(req, 'images', { items, pagination });
    })
    .add('GET', `${P}/images/{id}`, (req) => {
      sim.now();
      return { status: 200, body: { image: p.hetzner.imageBodyById(idParam(req, 'id', 'image')) } };
    })
    .add('PUT', `${P}/images/{id}`, (req) => {
      sim.now();
      return { status: 200, body: { image: p.hetzner.imageBody(p.hetzner.updateImage(idParam(req, 'id', 'image'), jsonBody(req))) } };
    })
    .add('DELETE', `${P}/images/{id}`, (req) => {
      sim.now();
      p.hetzner.deleteImage(idParam(req, 'id', 'image'));
      return { status: 204 };
    })
    .add('GET', `${P}/pricing`, () => ({ status: 200, body: { pricing: pricingBody() } }))
    .add('GET', `${P}/server_types/{id}`, (req) => {
      const name = serverTypeById(idParam(req, 'id', 'server type'));
      if (!name) throw new HetznerApiError(404, 'not_found', `server type with ID '${req.params.id}' not found`);
      return { status: 200, body: { server_type: serverTypeBody(name) } };
    });
  router
    .add('POST', `${P}/ssh_keys`, (req) => ({ status: 201, body: { ssh_key: p.sshKeys.body(p.sshKeys.create(jsonBody(req), sim.now())) } }))
    .add('GET', `${P}/ssh_keys`, (req) => {
      sim.now();
      const { items, pagination } = p.sshKeys.list({ ...listParams(req), fingerprint: req.query.get('fingerprint') ?? undefined });
      return listPage(req, 'ssh_keys', { items: items.map((k) => p.sshKeys.body(k)), pagination });
    })
    .add('GET', `${P}/ssh_keys/{id}`, (req) => ({ status: 200, body: { ssh_key: p.sshKeys.body(p.sshKeys.get(idParam(req, 'id', 'SSH key'))) } }))
    .add('PUT', `${P}/ssh_keys/{id}`, (req) => ({
      status: 200,
      body: { ssh_key: p.sshKeys.body(p.sshKeys.update(idParam(req, 'id', 'SSH key'), jsonBody(req))) },
    }))
    .add('DELETE', `${P}/ssh_keys/{id}`, (req) => {
      p.sshKeys.delete(idParam(req, 'id', 'SSH key'));
      return { status: 204 };
    });
  for (const kind of POWER_ACTIONS) {
    router.add('POST', `${P}/servers/{id}/actions/${kind}`, (req) => {
      const now = sim.now();
      return { status: 201, body: { action: p.hetzner.actionBody(p.hetzner.powerAction(idParam(req, 'id', 'server'), kind, now), now) } };
    });
  }

  return {
    prefix: P,
    router,
    handle(req, match) {
      const token = bearerToken(req);
      const limit = sim.rateLimiter.take(token ?? `anonymous`, sim.now());
      const withLimits = (res: SimResponse): SimResponse => ({ ...res, headers: { ...res.headers, ...limit.headers } });
      if (!limit.allowed) {
        return withLimits({ status: 429, body: errorBody('rate_limit_exceeded', 'limit of requests per hour reached') });
      }
      // The official answer to a missing, unknown or revoked token (see the 401 examples of the spec).
      const project = sim.projectOf(token);
      if (!project) {
        return withLimits({ status: 401, body: errorBody('unauthorized', 'unable to authenticate') });
      }
      p = project;
      if (match.kind === 'not_found') return withLimits({ status: 404, body: errorBody('not_found', 'not found') });
      if (match.kind === 'method_not_allowed') {
        return withLimits({ status: 405, body: errorBody('method_not_allowed', 'method not allowed') });
      }
      try {
        return withLimits(match.handler(req));
      } catch (err) {
        if (err instanceof HetznerApiError) {
          return withLimits({ status: err.status, body: errorBody(err.code, err.message, err.details) });
        }
        throw err;
      }
    },
    injectedError(status, code, message) {
      const res: SimResponse = {
        status,
        body: errorBody(code ?? DEFAULT_ERROR_CODES[status] ?? 'server_error', message ?? 'injected fault'),
      };
      if (status === 429) {
        const limit = sim.timings.rateLimit.limit;
        res.headers = {
          'RateLimit-Limit': String(limit),
          'RateLimit-Remaining': '0',
          'RateLimit-Reset': String(Math.ceil(sim.now() / 1000) + 1),
        };
      }
      return res;
    },
  };
}

function jsonBody(req: SimRequest): unknown {
  try {
    return parseJsonBody(req);
  } catch (err) {
    if (err instanceof BodyParseError) throw new HetznerApiError(400, 'json_error', err.message);
    throw err;
  }
}
