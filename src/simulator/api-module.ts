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

/**
 * Answers a routed request in an API's own words: `unrouted` for a path it does not have (404) or
 * a method the path does not take (405); else `check` (auth, say) and the route's handler, with
 * what they throw answered by `failed` (undefined: thrown on, a bug of the simulator).
 */
export function answer(
  req: SimRequest,
  match: RouteMatch,
  api: {
    unrouted: (status: 404 | 405) => SimResponse;
    check?: (req: SimRequest, template: string) => void;
    failed: (err: unknown) => SimResponse | undefined;
  },
): SimResponse {
  if (match.kind === 'not_found') return api.unrouted(404);
  if (match.kind === 'method_not_allowed') return api.unrouted(405);
  try {
    api.check?.(req, match.template);
    return match.handler(req);
  } catch (err) {
    const res = api.failed(err);
    if (res) return res;
    throw err;
  }
}

/** An API module over its router, answering in the words given (see `answer`). */
export function routedApi(
  prefix: string,
  router: Router,
  words: Parameters<typeof answer>[2] & Pick<ApiModule, 'injectedError'>,
): ApiModule {
  return { prefix, router, handle: (req, match) => answer(req, match, words), injectedError: words.injectedError };
}
