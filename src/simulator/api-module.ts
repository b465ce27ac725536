import type { RouteMatch, Router, SimRequest, SimResponse } from './router';

/** One simulated API (Hetzner, Tailscale, control): its routes plus its auth and error conventions. */
export interface ApiModule {
  prefix: string;
  router: Router;
  handle(req: SimRequest, match: RouteMatch): SimResponse;
  /** The response for an error injected by a fault rule, in this API's error shape. */
  injectedError(status: number, code: string | undefined, message: string | undefined): SimResponse;
}

export const DEFAULT_ERROR_CODES: Record<number, string> = {
  400: 'invalid_input',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  412: 'resource_unavailable',
  422: 'invalid_input',
  423: 'locked',
  429: 'rate_limit_exceeded',
  500: 'server_error',
  502: 'server_error',
  503: 'unavailable',
  504: 'timeout',
};
