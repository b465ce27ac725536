import type { Express, NextFunction, Request, RequestHandler, Response, Router } from 'express';
import { TOKEN_SCOPES, type TokenScope } from '../entities';
import { scopeRefusal } from './auth';
import { registeredRoutes, type ApiRoute } from './contract';
import { HttpProblem } from './problem';

/**
 * Routes are declared once, in the registry (contract.ts): its entry gives the method, the path and
 * the scope. A router serves handlers by the entry's operationId, so a route cannot be served at
 * another path or under another scope than the document says, and a handler with no entry fails at
 * start-up.
 */
export type RouteHandlers = Record<string, RequestHandler>;

type Method = ApiRoute['method'];

/** Serves `handlers` (by operationId) on `router`, mounted at `base`. */
export function serve(router: Router, handlers: RouteHandlers, base = '/v1'): void {
  const byPath = new Map<string, Array<{ method: Method; scope: TokenScope; handler: RequestHandler }>>();
  for (const [operationId, handler] of Object.entries(handlers)) {
    const entry = registeredRoutes().find((r) => r.operationId === operationId);
    if (!entry) throw new Error(`No route is registered as ${operationId}: add it to the registry (contract.ts) to serve it`);
    if (!entry.path.startsWith(`${base}/`)) throw new Error(`${operationId} is registered at ${entry.path}, outside ${base}`);
    const scope = entry.auth;
    if (typeof scope !== 'string' || !(TOKEN_SCOPES as readonly string[]).includes(scope)) {
      throw new Error(`${operationId} is registered without a token scope; a router under ${base} serves only scoped routes`);
    }
    const methods = byPath.get(entry.path) ?? [];
    methods.push({ method: entry.method, scope: scope as TokenScope, handler });
    byPath.set(entry.path, methods);
  }
  for (const [template, methods] of byPath) mount(router, base, template, methods);
}

/**
 * One path: its template (for metrics and logs), the scope each method needs (checked before
 * anything else is read) and a 405 for every other method.
 */
function mount(router: Router, base: string, template: string, methods: Array<{ method: Method; scope: TokenScope; handler: RequestHandler }>): void {
  const allowed = methods.map((m) => m.method.toUpperCase());
  if (allowed.includes('GET')) allowed.push('HEAD');
  const path = template.slice(base.length).replace(/\{(\w+)\}/g, ':$1');
  const routeTemplate = `${base}${path}`;
  const r = router.route(path);
  // One layer per method: the template (for logs and metrics), the token's scope, then the handler.
  for (const { method, scope, handler } of methods) {
    r[method]((req, res, next) => {
      res.locals.routeTemplate = routeTemplate;
      const refused = scopeRefusal(res, scope);
      if (refused) {
        next(refused);
        return;
      }
      return handler(req, res, next);
    });
  }
  r.all((req, res, next) => {
    res.locals.routeTemplate = routeTemplate;
    res.setHeader('Allow', allowed.join(', '));
    if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    next(new HttpProblem('method-not-allowed', `${req.method} is not allowed here; use ${allowed.join(', ')}.`));
  });
}

/**
 * The routes outside /v1 that need no token (probes, metrics, the document): served by operationId
 * like the others, tagged with their template; their own handlers decide who may see what.
 */
export function servePublic(app: Express, handlers: RouteHandlers): void {
  for (const [operationId, handler] of Object.entries(handlers)) {
    const entry = registeredRoutes().find((r) => r.operationId === operationId);
    if (!entry) throw new Error(`No route is registered as ${operationId}: add it to the registry (contract.ts) to serve it`);
    if (entry.auth !== 'public') throw new Error(`${operationId} is not registered as public`);
    app[entry.method](entry.path, (req, res, next) => {
      res.locals.routeTemplate = entry.path;
      return handler(req, res, next);
    });
  }
}

/**
 * Middlewares run one after the other as one router layer: what every request under a router goes
 * through, without the router matching and dispatching each (a command would otherwise walk a layer
 * per step). An error, or a returned promise that rejects, skips the rest as in Express.
 */
export function inOrder(...handlers: RequestHandler[]): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    let i = 0;
    const step = (err?: unknown): void => {
      if (err !== undefined || i === handlers.length) {
        next(err);
        return;
      }
      const handler = handlers[i++]!;
      try {
        const result: unknown = handler(req, res, step);
        if (result instanceof Promise) result.then(undefined, (e: unknown) => step(e ?? new Error('Rejected promise')));
      } catch (e) {
        step(e);
      }
    };
    step();
  };
}
