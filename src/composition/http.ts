import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import express, { type Application } from 'express';
import type { Authenticator } from '../api/auth';
import { answerClientError, HttpProblem, problemErrorHandler } from '../api/problem';
import { metricsHandler, readyzHandler, type Readiness } from '../api/probes';
import { servePublic } from '../api/routing';
import type { Config } from '../config';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';

/** A worker-only process serves just probes and its own metrics (jobs, cloud requests). */
export function createProbeApp(deps: {
  metrics: Metrics;
  readiness: () => Promise<Readiness>;
  config: Pick<Config, 'metrics'>;
  auth: Authenticator;
  logger: Logger;
}): Application {
  const app = express();
  app.disable('x-powered-by');
  servePublic(app, {
    liveness: (_req, res) => {
      res.json({ status: 'ok' });
    },
    readiness: readyzHandler(deps.readiness, deps.auth),
    ...(deps.config.metrics.listen ? {} : { metrics: metricsHandler(deps.metrics, deps.config.metrics.token) }),
  });
  app.use((req, _res, next) => {
    next(new HttpProblem('route-not-found', `No route for ${req.method} ${req.path}; a worker serves /healthz, /readyz and /metrics.`));
  });
  app.use(problemErrorHandler({ logger: deps.logger, bodyLimit: '0b' }));
  return app;
}

/** An HTTP server for `app` on host:port, its sockets tracked (shutdown ends them), answering parse errors with problems. */
export async function listen(app: Application, at: { host: string; port: number }, sockets: Set<Socket>): Promise<Server> {
  const server = createServer(app);
  server.on('clientError', answerClientError);
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** http://host:port of a listening server, with a wildcard address shown as loopback. */
export function urlOf(server: Server): string {
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${addr.port}`;
}

/** Stops accepting, closes idle keep-alive sockets now and busy ones after `graceMs`. */
export function closeHttp(server: Server, sockets: Set<Socket>, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
