import { connect, type Socket } from 'node:net';

/**
 * Sends one GET over a raw socket and never reads the answer: the client of a slow or stuck
 * consumer. Resolves once the request is written; `destroy()` the socket to go away.
 */
export function sendAndNeverRead(baseUrl: string, path: string, headers: Record<string, string>): Promise<Socket> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    // Paused before it connects: the socket never starts reading, so whatever the server sends stays
    // in the kernel's buffers and then the server's.
    socket.pause();
    socket.once('error', reject);
    socket.once('connect', () => {
      const lines = [`GET ${path} HTTP/1.1`, `Host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`, (err) => (err ? reject(err) : resolve(socket)));
    });
  });
}
