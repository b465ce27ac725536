import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse as parseCookie, serialize as serializeCookie } from 'cookie';
import { Eta } from 'eta';
import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import { scopeAllows, type Authenticator, type Principal } from '../api/auth';
import { HttpProblem } from '../api/problem';
import type { RateLimitState } from '../clients/http';
import { OPERATION_TYPES, type TokenScope } from '../entities';
import { AGENT_COMMAND_TYPES, type AgentCommandType } from '../operations/types';
import { ConsoleApi, problemText, qs, type ApiAnswer } from './api';
import { fleetPage, hourlyOperations } from './fleet';
import { csrfMatches, DEFAULT_SESSION_TTL_MS, SESSION_COOKIE, SessionSealer, type Session } from './session';
import { helpers } from './view-helpers';
import { UUID } from '../db/uuid';

/**
 * The operator's console at /console: server-rendered pages (eta templates in ./views) over the
 * /v1 API, a sealed session cookie instead of a bearer header, forms with a CSRF token, and one
 * small script (./assets/console.js) for the live status and the charts. Assets are served from
 * this package and its dependencies, never from elsewhere, under a Content-Security-Policy that
 * allows nothing inline.
 */

export const CONSOLE_PATH = '/console';

export interface ConsoleDeps {
  auth: Pick<Authenticator, 'authenticate'>;
  /** API_TOKEN: the session cookie's key is derived from it. */
  secret: string;
  sessionTtlMs?: number;
  /** The Hetzner project's request budget as this process last saw it; omitted: not shown. */
  requestBudget?: () => RateLimitState;
}

interface Signed {
  session: Session;
  principal: Principal;
  api: ConsoleApi;
}

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

const PROBLEM_TITLES: Record<number, string> = { 400: 'Not understood', 403: 'Not allowed', 404: 'Not found', 413: 'Too large', 415: 'Not a form' };

// The commands the operation descriptors declare, destroy last (it asks for the agent's name).
const AGENT_ACTIONS: readonly AgentCommandType[] = [...AGENT_COMMAND_TYPES.filter((t) => t !== 'destroy'), 'destroy'];
type AgentAction = AgentCommandType;

/**
 * A folder of the console's files: beside this module (the sources, or a build by `npm run build`,
 * which copies them), else in the sources next to a build compiled by tsc alone (dist/src/console).
 */
function ownDir(name: 'views' | 'assets'): string {
  const beside = join(__dirname, name);
  return existsSync(beside) ? beside : join(__dirname, '..', '..', '..', 'src', 'console', name);
}

/** Files the console serves: its own, and the ones its dependencies ship. */
function assetFiles(): Record<string, { path: string; type: string }> {
  const own = (name: string) => join(ownDir('assets'), name);
  return {
    'console.js': { path: own('console.js'), type: 'text/javascript; charset=utf-8' },
    'console.css': { path: own('console.css'), type: 'text/css; charset=utf-8' },
    'pico.min.css': { path: require.resolve('@picocss/pico/css/pico.min.css'), type: 'text/css; charset=utf-8' },
    // chart.js exports no subpaths: its browser build sits beside the main file.
    'chart.umd.min.js': { path: join(dirname(require.resolve('chart.js')), 'chart.umd.min.js'), type: 'text/javascript; charset=utf-8' },
  };
}

const signedOf = (res: Response): Signed => res.locals.console as Signed;
const can = (res: Response, scope: TokenScope) => scopeAllows(signedOf(res).principal.scope, scope);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const one = (v: unknown): string | undefined => (Array.isArray(v) ? str(v[0]) : str(v));

/** A notice carried across a redirect (post, redirect, get). */
function withNotice(path: string, kind: 'notice' | 'error', text: string): string {
  const sep = path.includes('?') ? '&' : '?';
  return `${path}${sep}${kind}=${encodeURIComponent(text.slice(0, 300))}`;
}

function isHttps(req: Request): boolean {
  return req.secure || req.get('x-forwarded-proto')?.split(',')[0]?.trim() === 'https';
}

/**
 * Same origin: the form was posted by a page of this server. Browsers send Origin on every POST, and
 * Sec-Fetch-Site where they support it; a request with neither comes from no browser (curl, a script),
 * which cannot carry a victim's cookie across sites.
 */
function sameOrigin(req: Request): boolean {
  const site = req.get('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
  const origin = req.get('origin');
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.get('host');
  } catch {
    return false;
  }
}

/** Only paths inside the console are followed after sign-in (no open redirect). */
function safeNext(next: unknown): string {
  if (typeof next !== 'string' || next.includes('//') || next.includes('..')) return CONSOLE_PATH;
  return /^\/console(\/[A-Za-z0-9/_\-.?=&%]*)?$/.test(next) ? next : CONSOLE_PATH;
}

export function createConsoleRouter(deps: ConsoleDeps): Router {
  const sealer = new SessionSealer(deps.secret);
  const ttl = deps.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
  const views = ownDir('views');
  const eta = new Eta({ views, autoEscape: true, cache: existsSync(join(__dirname, 'router.js')), useWith: false });
  const assets = assetFiles();
  const router = express.Router({ strict: false });

  const render = (res: Response, view: string, data: Record<string, unknown>, status = 200) => {
    const signed = res.locals.console as Signed | undefined;
    const html = eta.render(view, {
      ...data,
      h: helpers,
      path: res.locals.consolePath as string,
      principal: signed?.principal ?? null,
      csrf: signed?.session.csrf ?? '',
      can: (scope: TokenScope) => (signed ? scopeAllows(signed.principal.scope, scope) : false),
      notice: one((res.req.query as Record<string, unknown>).notice) ?? null,
      error: (data.error as string | undefined) ?? one((res.req.query as Record<string, unknown>).error) ?? null,
    });
    res.status(status).type('html').send(html);
  };

  const setCookie = (req: Request, res: Response, value: string, maxAgeSeconds: number) => {
    res.append(
      'Set-Cookie',
      serializeCookie(SESSION_COOKIE, value, {
        httpOnly: true,
        sameSite: 'strict',
        secure: isHttps(req),
        path: CONSOLE_PATH,
        maxAge: maxAgeSeconds,
      }),
    );
  };

  router.use((req, res, next) => {
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'same-origin');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Cache-Control', 'no-store');
    res.locals.consolePath = CONSOLE_PATH + (req.path === '/' ? '' : req.path);
    res.locals.routeTemplate = CONSOLE_PATH;
    next();
  });

  router.get('/assets/:file', (req, res, next) => {
    const name = String(req.params.file);
    const file = Object.hasOwn(assets, name) ? assets[name] : undefined;
    if (!file) {
      next(new HttpProblem('route-not-found', `No console asset ${name}.`));
      return;
    }
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.type(file.type).sendFile(file.path);
  });

  const parseForm = express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 50 });
  // The form parser's own errors, as the problems the rest of the app answers with.
  const forms: RequestHandler = (req, res, next) => {
    parseForm(req, res, (err?: unknown) => {
      if (!err) return next();
      const type = (err as { type?: string }).type;
      if (type === 'entity.too.large') return next(new HttpProblem('payload-too-large', 'The form is larger than 16 KiB.'));
      if (type === 'charset.unsupported' || type === 'encoding.unsupported') {
        return next(new HttpProblem('unsupported-media-type', 'The form uses an unsupported charset or content encoding.'));
      }
      next(new HttpProblem('validation-error', 'The form could not be read.'));
    });
  };

  router.get('/sign-in', (req, res) => {
    if (sealer.open(parseCookie(req.get('cookie') ?? '')[SESSION_COOKIE])) {
      res.redirect(303, safeNext(req.query.next));
      return;
    }
    render(res, 'sign-in', {
      title: 'Sign in',
      next: safeNext(req.query.next),
      expired: req.query.expired === '1',
    });
  });

  router.post('/sign-in', forms, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const next = safeNext(body.next);
    if (!sameOrigin(req)) throw new HttpProblem('forbidden', 'The sign-in form was posted from another site.');
    const token = typeof body.token === 'string' ? body.token.trim() : '';
    const principal = token && token.length <= 512 ? await deps.auth.authenticate(token) : null;
    // An agent's own credential reports activity and reads nothing: it opens no console.
    if (!principal || principal.scope === 'agent') {
      render(res, 'sign-in', { title: 'Sign in', next, expired: false, error: 'That token is not valid (unknown, revoked or expired).' }, 401);
      return;
    }
    setCookie(req, res, sealer.seal(sealer.create(token, ttl)), Math.floor(ttl / 1000));
    res.redirect(303, next);
  });

  // Everything below needs a session whose token the API still accepts.
  const requireSession: RequestHandler = async (req, res, next) => {
    const cookie = parseCookie(req.get('cookie') ?? '')[SESSION_COOKIE];
    const session = sealer.open(cookie);
    const principal = session ? await deps.auth.authenticate(session.token) : null;
    if (!session || !principal) {
      if (cookie) setCookie(req, res, '', 0);
      const back = req.method === 'GET' ? req.originalUrl : CONSOLE_PATH;
      res.redirect(303, `${CONSOLE_PATH}/sign-in${qs({ next: safeNext(back), expired: cookie ? '1' : undefined })}`);
      return;
    }
    res.locals.console = { session, principal, api: ConsoleApi.of(req, session.token, res.locals.requestId as string | undefined) } satisfies Signed;
    next();
  };
  router.use(requireSession);

  const checkCsrf: RequestHandler = (req, _res, next) => {
    const session = signedOf(_res).session;
    if (!sameOrigin(req) || !csrfMatches(session, (req.body as Record<string, unknown> | undefined)?._csrf)) {
      next(new HttpProblem('forbidden', 'The form is stale or came from elsewhere: reload the page and try again.'));
      return;
    }
    next();
  };
  const post = (path: string, handler: (req: Request, res: Response) => Promise<void>) =>
    router.post(path, forms, checkCsrf, (req: Request, res: Response, next: NextFunction) => {
      handler(req, res).catch(next);
    });
  const get = (path: string, handler: (req: Request, res: Response) => Promise<void>) =>
    router.get(path, (req: Request, res: Response, next: NextFunction) => {
      handler(req, res).catch(next);
    });

  /**
   * A page of a paged listing (`view` is also its path): the API's page, or none with its problem,
   * and the link to the next page with the same filters.
   */
  const listingPage = (
    res: Response,
    view: 'agents' | 'operations' | 'findings',
    p: { title: string; filters: Parameters<typeof qs>[0]; answer: ApiAnswer },
    extra: Record<string, unknown> = {},
  ) => {
    const { title, filters, answer } = p;
    render(res, view, {
      title,
      filters,
      page: answer.ok ? answer.body : { items: [], nextCursor: null },
      error: answer.ok ? undefined : problemText(answer),
      nextLink: answer.ok && answer.body.nextCursor ? `${CONSOLE_PATH}/${view}${qs({ ...filters, cursor: answer.body.nextCursor })}` : null,
      ...extra,
    });
  };

  post('/sign-out', async (req, res) => {
    setCookie(req, res, '', 0);
    res.redirect(303, `${CONSOLE_PATH}/sign-in`);
  });

  // ---------------------------------------------------------------------------------------------
  // Fleet

  get('/', async (_req, res) => {
    const data = await fleetPage(signedOf(res).api);
    render(res, 'fleet', { title: 'Fleet', ...data, budget: deps.requestBudget?.() ?? null });
  });

  // ---------------------------------------------------------------------------------------------
  // Agents

  get('/agents', async (req, res) => {
    const q = req.query as Record<string, unknown>;
    const labels = (Array.isArray(q.label) ? q.label : [q.label]).map(str).filter((l): l is string => l !== undefined);
    const filters = { status: one(q.status), name: one(q.name), label: labels, cursor: one(q.cursor) };
    const answer = await signedOf(res).api.get(`/v1/agents${qs({ ...filters, limit: 25 })}`);
    listingPage(res, 'agents', { title: 'Agents', filters, answer });
  });

  get('/agents/:id', async (req, res) => {
    const id = String(req.params.id);
    const api = signedOf(res).api;
    if (!UUID.test(id)) throw new HttpProblem('not-found', `No agent ${id}.`);
    const detail = await api.get(`/v1/agents/${id}`);
    if (!detail.ok) throw new HttpProblem(detail.status === 404 ? 'not-found' : 'service-unavailable', problemText(detail));
    const [events, operations, leases] = await Promise.all([
      api.get(`/v1/agents/${id}/events?limit=500`),
      api.get(`/v1/operations${qs({ agentId: id, limit: 100 })}`),
      api.get(`/v1/agents/${id}/leases`),
    ]);
    render(res, 'agent', {
      title: detail.body.agent.name,
      detail: detail.body,
      // The live leases: while one is, no policy stops, expires or claims the agent.
      leases: leases.ok ? (leases.body.items as Array<{ live: boolean }>).filter((l) => l.live) : null,
      timeline: helpers.timeline(events.ok ? events.body.items : [], operations.ok ? operations.body.items : []),
      actions: AGENT_ACTIONS,
    });
  });

  get('/agents/:id/destroy', async (req, res) => {
    const id = String(req.params.id);
    if (!UUID.test(id)) throw new HttpProblem('not-found', `No agent ${id}.`);
    const detail = await signedOf(res).api.get(`/v1/agents/${id}`);
    if (!detail.ok) throw new HttpProblem('not-found', problemText(detail));
    render(res, 'confirm-destroy', { title: `Destroy ${detail.body.agent.name}`, agent: detail.body.agent });
  });

  post('/agents/:id/:action', async (req, res) => {
    const id = String(req.params.id);
    const action = String(req.params.action) as AgentAction;
    if (!UUID.test(id) || !AGENT_ACTIONS.includes(action)) throw new HttpProblem('not-found', 'No such agent action.');
    const back = `${CONSOLE_PATH}/agents/${id}`;
    const api = signedOf(res).api;
    if (action === 'destroy') {
      const detail = await api.get(`/v1/agents/${id}`);
      const confirm = str((req.body as Record<string, unknown>).confirm);
      if (!detail.ok || confirm !== detail.body.agent.name) {
        res.redirect(303, withNotice(`${back}/destroy`, 'error', 'Type the agent’s name exactly to destroy it.'));
        return;
      }
    }
    const answer = await api.call('POST', `/v1/agents/${id}/${action}`);
    res.redirect(
      303,
      answer.ok
        ? withNotice(back, 'notice', `${action}: operation ${answer.body.operation?.id ?? ''} ${answer.body.operation?.status ?? 'accepted'}`)
        : withNotice(back, 'error', problemText(answer)),
    );
  });

  // ---------------------------------------------------------------------------------------------
  // Pools

  get('/pools', async (_req, res) => {
    const answer = await signedOf(res).api.get('/v1/pools');
    render(res, 'pools', { title: 'Pools', pools: answer.ok ? answer.body.items : [], error: answer.ok ? undefined : problemText(answer) });
  });

  // ---------------------------------------------------------------------------------------------
  // Operations and findings

  get('/operations', async (req, res) => {
    const q = req.query as Record<string, unknown>;
    const filters = { status: one(q.status), type: one(q.type), agentId: one(q.agentId), cursor: one(q.cursor) };
    const answer = await signedOf(res).api.get(`/v1/operations${qs({ ...filters, limit: 50 })}`);
    listingPage(res, 'operations', { title: 'Operations', filters, answer }, { types: OPERATION_TYPES, hourly: hourlyOperations(answer.ok ? answer.body.items : []) });
  });

  get('/findings', async (req, res) => {
    const q = req.query as Record<string, unknown>;
    const filters = { status: one(q.status) ?? 'open', kind: one(q.kind), cursor: one(q.cursor) };
    const answer = await signedOf(res).api.get(`/v1/findings${qs({ ...filters, status: filters.status === 'all' ? undefined : filters.status, limit: 50 })}`);
    listingPage(res, 'findings', { title: 'Findings', filters, answer });
  });

  post('/findings/:id/resolve', async (req, res) => {
    const id = String(req.params.id);
    if (!UUID.test(id)) throw new HttpProblem('not-found', `No finding ${id}.`);
    const answer = await signedOf(res).api.call('POST', `/v1/findings/${id}/resolve`, { note: str((req.body as Record<string, unknown>).note) ?? '' });
    res.redirect(303, withNotice(`${CONSOLE_PATH}/findings`, answer.ok ? 'notice' : 'error', answer.ok ? `Finding ${id} resolved.` : problemText(answer)));
  });

  // ---------------------------------------------------------------------------------------------
  // Tokens and webhooks (admin)

  const adminOnly = (res: Response): boolean => {
    if (can(res, 'admin')) return true;
    render(res, 'error', { title: 'Admin only', message: `The token "${signedOf(res).principal.name}" has scope ${signedOf(res).principal.scope}; this page needs admin.` }, 403);
    return false;
  };

  /**
   * An admin-only collection (tokens, webhooks): its page lists it; a create answers with the page
   * showing what was made (its secret is in this answer only: rendered, never put in a URL) or the
   * API's problem; removing one redirects back to the page with a notice.
   */
  const adminCollection = (c: {
    name: 'tokens' | 'webhooks';
    title: string;
    /** The query of the page's listing. */
    listing?: string;
    createBody: (form: Record<string, unknown>) => Record<string, unknown>;
    /** The path segment of the removing form, and what its notices say. */
    remove: { action: string; done: string; unknown: string };
  }) => {
    const page = async (res: Response, extra: Record<string, unknown> = {}, status = 200) => {
      const answer = await signedOf(res).api.get(`/v1/${c.name}${c.listing ?? ''}`);
      render(res, c.name, { title: c.title, [c.name]: answer.ok ? answer.body.items : [], ...extra }, status);
    };

    get(`/${c.name}`, async (_req, res) => {
      if (adminOnly(res)) await page(res);
    });

    post(`/${c.name}`, async (req, res) => {
      if (!adminOnly(res)) return;
      const answer = await signedOf(res).api.call('POST', `/v1/${c.name}`, c.createBody(req.body as Record<string, unknown>));
      if (answer.ok) await page(res, { created: answer.body }, 201);
      else await page(res, { error: problemText(answer) }, answer.status);
    });

    post(`/${c.name}/:id/${c.remove.action}`, async (req, res) => {
      if (!adminOnly(res)) return;
      const id = String(req.params.id);
      const answer = UUID.test(id) ? await signedOf(res).api.call('DELETE', `/v1/${c.name}/${id}`) : ({ ok: false, status: 404, body: { detail: c.remove.unknown } } as ApiAnswer);
      res.redirect(303, withNotice(`${CONSOLE_PATH}/${c.name}`, answer.ok ? 'notice' : 'error', answer.ok ? c.remove.done : problemText(answer)));
    });
  };

  adminCollection({
    name: 'tokens',
    title: 'Tokens',
    listing: '?includeRevoked=true',
    createBody: (form) => {
      const expires = str(form.expiresAt);
      return {
        name: str(form.name) ?? '',
        scope: str(form.scope) ?? '',
        ...(expires ? { expiresAt: /Z|[+-]\d\d:\d\d$/.test(expires) ? expires : `${expires}:00Z` } : {}),
      };
    },
    remove: { action: 'revoke', done: 'Token revoked.', unknown: 'No such token.' },
  });

  adminCollection({
    name: 'webhooks',
    title: 'Webhooks',
    createBody: (form) => {
      const events = (Array.isArray(form.events) ? form.events : [form.events]).map(str).filter((e): e is string => e !== undefined);
      return { url: str(form.url) ?? '', ...(events.length ? { events } : {}) };
    },
    remove: { action: 'delete', done: 'Webhook deleted.', unknown: 'No such webhook.' },
  });

  get('/webhooks/:id', async (req, res) => {
    if (!adminOnly(res)) return;
    const id = String(req.params.id);
    if (!UUID.test(id)) throw new HttpProblem('not-found', `No webhook ${id}.`);
    const api = signedOf(res).api;
    const [hook, deliveries] = await Promise.all([api.get(`/v1/webhooks/${id}`), api.get(`/v1/webhooks/${id}/deliveries${qs({ limit: 50, cursor: one(req.query.cursor) })}`)]);
    if (!hook.ok) throw new HttpProblem('not-found', problemText(hook));
    render(res, 'webhook', {
      title: 'Webhook deliveries',
      hook: hook.body,
      deliveries: deliveries.ok ? deliveries.body.items : [],
      nextLink: deliveries.ok && deliveries.body.nextCursor ? `${CONSOLE_PATH}/webhooks/${id}${qs({ cursor: deliveries.body.nextCursor })}` : null,
    });
  });

  // ---------------------------------------------------------------------------------------------
  // The event stream, for the pages' live status: the API's own, with the session's token.

  router.get('/events', async (req, res, next) => {
    const api = signedOf(res).api;
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    try {
      const lastEventId = req.get('last-event-id');
      const upstream = await fetch(`${api.baseUrl}/v1/events/stream`, {
        headers: api.headers(lastEventId ? { 'last-event-id': lastEventId } : {}),
        signal: abort.signal,
      });
      if (!upstream.ok || !upstream.body) {
        res.status(upstream.status === 429 ? 429 : 502).type('text/plain').send('The event stream is not available now.');
        return;
      }
      res.status(200).setHeader('Content-Type', 'text/event-stream');
      res.setHeader('X-Accel-Buffering', 'no');
      res.flushHeaders();
      for await (const chunk of upstream.body) {
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
      }
      res.end();
    } catch (err) {
      if (abort.signal.aborted) return;
      if (res.headersSent) res.end();
      else next(err);
    }
  });

  // Console pages answer a browser: an unexpected failure is a page, not a JSON document.
  // A browser navigating gets a page; anything else the API's problem document.
  router.use((err: unknown, req: Request, res: Response, next: NextFunction) => {
    const browser = req.get('accept')?.includes('text/html') === true;
    if (err instanceof HttpProblem && err.status < 500 && browser && !res.headersSent) {
      render(res, 'error', { title: PROBLEM_TITLES[err.status] ?? 'Refused', message: err.message }, err.status);
      return;
    }
    next(err);
  });

  return router;
}
