import { routedApi, type ApiModule } from './api-module';
import { HetznerApiError, parseId } from './hetzner.model';
import { BodyParseError, Router, parseJsonBody, type SimRequest } from './router';
import type { CloudSimulator, SimDeviceInput, SimDevicePatch, SimServerInput, SimServerPatch } from './simulator';
import { SimInputError } from './timings';

export const CONTROL_PREFIX = '/_sim';

class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function objectBody(req: SimRequest, required: boolean): Record<string, unknown> | undefined {
  const body = parseJsonBody(req);
  if (body === undefined && !required) return undefined;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ControlError(400, 'request body must be a JSON object');
  }
  return body as Record<string, unknown>;
}

function serverId(req: SimRequest): number {
  const id = parseId(req.params.id);
  if (id === undefined) throw new ControlError(404, `server ${req.params.id} not found`);
  return id;
}

/** The `/_sim` test API: thin JSON wrappers over `sim.control`. Not counted, not rate limited, no faults. */
export function createControlApi(sim: CloudSimulator): ApiModule {
  const c = sim.control;
  const router = new Router();
  const P = CONTROL_PREFIX;
  const ok = (body: unknown = { ok: true }) => ({ status: 200, body });

  router
    .add('POST', `${P}/reset`, (req) => {
      c.reset(objectBody(req, false));
      return ok({ ok: true, timings: c.timings() });
    })
    .add('GET', `${P}/state`, () => ok(c.state()))
    .add('GET', `${P}/requests`, () => ok({ counts: c.requestCounts() }))
    .add('POST', `${P}/requests/reset`, () => {
      c.resetRequestCounts();
      return ok();
    })
    .add('DELETE', `${P}/requests`, () => {
      c.resetRequestCounts();
      return ok();
    })
    .add('GET', `${P}/timings`, () => ok(c.timings()))
    .add('PUT', `${P}/timings`, (req) => ok(c.setTimings(objectBody(req, true) ?? {})))
    .add('GET', `${P}/faults`, () => ok(c.faults()))
    .add('PUT', `${P}/faults`, (req) => {
      const body = parseJsonBody(req);
      c.setFaults(body as never);
      return ok(c.faults());
    })
    .add('DELETE', `${P}/faults`, () => {
      c.clearFaults();
      return ok();
    })
    .add('POST', `${P}/servers`, (req) => ({
      status: 201,
      body: { server: c.createServer((objectBody(req, false) ?? {}) as SimServerInput) },
    }))
    .add('PATCH', `${P}/servers/{id}`, (req) => {
      const server = c.updateServer(serverId(req), (objectBody(req, true) ?? {}) as SimServerPatch);
      if (!server) throw new ControlError(404, `server ${req.params.id} not found`);
      return ok({ server });
    })
    .add('DELETE', `${P}/servers/{id}`, (req) => {
      if (!c.deleteServer(serverId(req))) throw new ControlError(404, `server ${req.params.id} not found`);
      return ok();
    })
    .add('POST', `${P}/devices`, (req) => ({
      status: 201,
      body: { device: c.createDevice((objectBody(req, true) ?? {}) as unknown as SimDeviceInput) },
    }))
    .add('PATCH', `${P}/devices/{id}`, (req) => {
      const device = c.updateDevice(req.params.id, (objectBody(req, true) ?? {}) as SimDevicePatch);
      if (!device) throw new ControlError(404, `device ${req.params.id} not found`);
      return ok({ device });
    })
    .add('DELETE', `${P}/devices/{id}`, (req) => {
      if (!c.deleteDevice(req.params.id)) throw new ControlError(404, `device ${req.params.id} not found`);
      return ok();
    })
    .add('POST', `${P}/tokens/revoke`, () => ok({ revoked: c.revokeAccessTokens() }))
    .add('GET', `${P}/projects`, () => ok({ projects: c.projects() }))
    .add('PATCH', `${P}/projects/{name}`, (req) => {
      const body = objectBody(req, true) ?? {};
      const project = c.updateProject(req.params.name, body as { maxServers?: number | null });
      if (!project) throw new ControlError(404, `project ${req.params.name} not found`);
      return ok({ project });
    })
    // A place is a location (`fsn1`) or a server type in a location (`cx22@fsn1`).
    .add('GET', `${P}/capacity`, () => ok({ soldOut: c.state().soldOut }))
    .add('PUT', `${P}/capacity/sold-out/{place}`, (req) => ok({ soldOut: c.setSoldOut(req.params.place, true) }))
    .add('DELETE', `${P}/capacity/sold-out/{place}`, (req) => ok({ soldOut: c.setSoldOut(req.params.place, false) }));

  return routedApi(P, router, {
    unrouted: (status) => ({ status, body: { error: status === 404 ? 'unknown control route' : 'method not allowed' } }),
    failed: (err) => {
      if (err instanceof ControlError) return { status: err.status, body: { error: err.message } };
      if (err instanceof SimInputError || err instanceof BodyParseError) return { status: 400, body: { error: err.message } };
      if (err instanceof HetznerApiError) return { status: 400, body: { error: err.message, details: err.details } };
      return undefined;
    },
    injectedError: (status) => ({ status, body: { error: 'injected fault' } }),
  });
}
