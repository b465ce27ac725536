import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { ApiModule } from './api-module';
import { createControlApi } from './control.routes';
import { HETZNER_PREFIX, createHetznerApi } from './hetzner.routes';
import { bearerToken, type SimRequest, type SimResponse } from './router';
import { CloudSimulator, type CloudSimulatorOptions, type SimControl } from './simulator';
import { createTailscaleApi } from './tailscale.routes';

export interface StartSimulatorOptions extends CloudSimulatorOptions {
  /** 0 (default) = a free port. */
  port?: number;
  host?: string;
}

export interface RunningSimulator {
  /** e.g. http://127.0.0.1:4010 */
  url: string;
  /** url + '/hetzner/v1' */
  hetznerUrl: string;
  /** url + '/tailscale/api/v2' */
  tailscaleUrl: string;
  control: SimControl;
  /** Stops listening, drops every connection (also hanging ones) and cancels pending delays. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;

export async function startSimulator(opts: StartSimulatorOptions = {}): Promise<RunningSimulator> {
  const templates = new Set<string>();
  const sim = new CloudSimulator(opts, templates);
  const control = createControlApi(sim);
  const apis: ApiModule[] = [createHetznerApi(sim), createTailscaleApi(sim), control];
  for (const api of apis) for (const t of api.router.templates) templates.add(t);

  const sockets = new Set<Socket>();
  const delays = new Set<NodeJS.Timeout>();
  let closing = false;

  const delay = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        delays.delete(timer);
        resolve();
      }, ms);
      delays.add(timer);
    });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const api = apis.find((a) => path === a.prefix || path.startsWith(`${a.prefix}/`));
    if (!api) {
      send(res, {
        status: 404,
        body: { error: 'not found', apis: { hetzner: '/hetzner/v1', tailscale: '/tailscale/api/v2', control: '/_sim' } },
      });
      return;
    }
    const match = api.router.match(method, path);
    const template = match.kind === 'not_found' ? undefined : match.template;
    const project = api.prefix === HETZNER_PREFIX ? sim.projectOf(bearerToken({ headers: req.headers } as SimRequest)) : undefined;
    if (api !== control) sim.countRequest(`${method} ${template ?? '(unmatched)'}`, project);

    const rawBody = await readBody(req);
    if (rawBody === undefined) {
      send(res, { status: 413, body: { message: 'request body too large' } });
      return;
    }
    const request: SimRequest = {
      method,
      path,
      query: new URLSearchParams(qi < 0 ? '' : url.slice(qi + 1)),
      headers: req.headers,
      rawBody,
      params: match.kind === 'found' ? match.params : {},
    };

    if (api !== control) {
      const fault = sim.faults.decide(method, template, path, project?.name);
      if (fault.latencyMs > 0) await delay(fault.latencyMs);
      if (closing) return;
      // The request takes effect; only its answer is lost or replaced.
      if (fault.error?.afterCommit) api.handle(request, match);
      if (fault.error?.drop) {
        req.socket.destroy();
        return;
      }
      // A hanging request stays open until the client gives up or close() destroys its socket.
      if (fault.error?.hang) return;
      if (fault.error) {
        send(res, api.injectedError(fault.error.status, fault.error.code, fault.error.message));
        return;
      }
    }
    send(res, api.handle(request, match));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      process.stderr.write(`[simulator] ${req.method} ${req.url} failed: ${(err as Error)?.stack ?? String(err)}\n`);
      send(res, { status: 500, body: { error: { code: 'server_error', message: 'simulator error', details: null } } });
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });

  const address = server.address() as AddressInfo;
  const host = ['0.0.0.0', '::'].includes(address.address)
    ? '127.0.0.1'
    : address.family === 'IPv6'
      ? `[${address.address}]`
      : address.address;
  const base = `http://${host}:${address.port}`;
  let closed: Promise<void> | undefined;

  return {
    url: base,
    hetznerUrl: `${base}/hetzner/v1`,
    tailscaleUrl: `${base}/tailscale/api/v2`,
    control: sim.control,
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing = true;
        for (const timer of delays) clearTimeout(timer);
        delays.clear();
        server.close(() => resolve());
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
        sim.scheduler.clear();
      });
      return closed;
    },
  };
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(tooLarge ? undefined : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, r: SimResponse): void {
  if (res.headersSent || res.destroyed) return;
  const payload = r.body === undefined ? '' : JSON.stringify(r.body);
  const headers: Record<string, string | number> = { ...r.headers, 'Content-Length': Buffer.byteLength(payload) };
  if (payload !== '') headers['Content-Type'] = 'application/json';
  res.writeHead(r.status, headers);
  res.end(payload);
}
