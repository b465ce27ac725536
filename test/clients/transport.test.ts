import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { nodeTransport } from '../../src/clients/transport';

describe('cloud transport (node:http over keep-alive)', () => {
  let server: Server;
  let url: string;
  let connections = 0;
  let handler: (res: ServerResponse) => void;

  before(async () => {
    server = createServer((_req, res) => handler(res));
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const send = (signal = new AbortController().signal) => nodeTransport(`${url}/x?a=1`, { method: 'GET', headers: { accept: 'application/json' }, signal });

  it('answers status, headers by name (any case) and the whole body, over one reused connection', async () => {
    handler = (res) => {
      res.setHeader('RateLimit-Remaining', '41');
      res.end(JSON.stringify({ ok: 'é'.repeat(20_000) }));
    };
    const before = connections;
    for (let i = 0; i < 3; i++) {
      const res = await send();
      expect(res.status).to.equal(200);
      expect(res.headers.get('ratelimit-remaining')).to.equal('41');
      expect(res.headers.get('RateLimit-Remaining')).to.equal('41');
      expect(res.headers.get('retry-after')).to.equal(null);
      expect(JSON.parse(res.text).ok).to.have.length(20_000);
    }
    expect(connections - before).to.equal(1);
  });

  it('rejects an answer cut off in the middle of its body instead of returning part of it', async () => {
    handler = (res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('{"partial":');
      setImmediate(() => res.socket?.destroy());
    };
    let err: unknown;
    await send().catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(Error);
  });

  it('is aborted by its signal while the body stalls after the headers', async () => {
    handler = (res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('{"slow":');
    };
    const controller = new AbortController();
    const pending = send(controller.signal);
    setTimeout(() => controller.abort(new Error('deadline')), 50);
    let err: unknown;
    await pending.catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(Error);
  });
});
