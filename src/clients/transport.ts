import http from 'node:http';
import https from 'node:https';

/** What the request path needs of an HTTP answer: its status, its headers by name and its body as text. */
export interface TransportResponse {
  status: number;
  headers: { get(name: string): string | null };
  text: string;
}

export interface TransportRequest {
  method: string;
  headers: Record<string, string>;
  body?: string;
  /** Aborts the request, body included (the attempt's timeout). */
  signal: AbortSignal;
}

/** Sends one request and reads its whole answer; rejects on a network error or an abort. */
export type Transport = (url: string, req: TransportRequest) => Promise<TransportResponse>;

// Keep-alive connections shared by every client of the process: a cloud API is a handful of hosts,
// and a connection reused is a TLS handshake saved (and, on node:http, far less CPU per request than
// fetch). An idle connection is closed after 4 s, as fetch's own pool does, sooner when the server's
// Keep-Alive hint says so: a request is never written to a connection the server is about to drop.
// None is ever sent twice here: a create whose connection broke may have been carried out, and only
// the caller knows whether repeating it is safe.
const IDLE_CONNECTION_MS = 4_000;
const agents = {
  'http:': new http.Agent({ keepAlive: true, timeout: IDLE_CONNECTION_MS }),
  'https:': new https.Agent({ keepAlive: true, timeout: IDLE_CONNECTION_MS }),
};

/** node:http(s) over the keep-alive agents. */
export const nodeTransport: Transport = (url, req) => {
  const target = new URL(url);
  const lib = target.protocol === 'https:' ? https : http;
  const agent = agents[target.protocol as keyof typeof agents];
  if (!agent) return Promise.reject(new Error(`Unsupported protocol ${target.protocol} in ${url}`));
  const headers: Record<string, string | number> = { ...req.headers };
  if (req.body !== undefined) headers['content-length'] = Buffer.byteLength(req.body);
  return new Promise((resolve, reject) => {
    const request = lib.request(target, { method: req.method, headers, agent, signal: req.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('The answer was cut off')));
      res.on('end', () => {
        if (!res.complete) return reject(new Error('The answer was cut off'));
        const raw = res.headers;
        resolve({
          status: res.statusCode ?? 0,
          headers: {
            get: (name) => {
              const v = raw[name.toLowerCase()];
              return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
            },
          },
          text: Buffer.concat(chunks).toString('utf8'),
        });
      });
    });
    request.on('error', reject);
    request.end(req.body);
  });
};

/** A fetch function (a test's interceptor) as a transport. */
export function fetchTransport(fetchFn: typeof fetch): Transport {
  return async (url, req) => {
    const res = await fetchFn(url, { method: req.method, headers: req.headers, body: req.body, signal: req.signal });
    return { status: res.status, headers: res.headers, text: await res.text() };
  };
}
