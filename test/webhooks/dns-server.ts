import { createSocket, type Socket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import type { AddressInfo } from 'node:net';
import type { Lookup } from '../../src/webhooks/address-guard';

/**
 * A tiny authoritative DNS server on 127.0.0.1 (UDP, A records only, TTL 0) whose answers a test
 * scripts query by query: a list of IPv4 addresses, a response code (SERVFAIL …), or silence.
 * Enough for node:dns's Resolver, which is how the tests' DNS edge reaches it.
 */

export type DnsAnswer = string[] | { rcode: 'SERVFAIL' | 'NXDOMAIN' | 'REFUSED' } | 'silence';

export interface DnsQuery {
  name: string;
  type: number;
}

const RCODES = { SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;
const TYPE_A = 1;

export interface TestDnsServer {
  port: number;
  queries: DnsQuery[];
  /** Decides each answer (called with the query and how many queries for that name came before). */
  answer: (q: DnsQuery, nth: number) => DnsAnswer;
  /** A DNS edge that resolves through this server only (A records). */
  lookup: Lookup;
  close(): Promise<void>;
}

function parseQuestion(msg: Buffer): { name: string; type: number; end: number } {
  const labels: string[] = [];
  let i = 12;
  while (msg[i]! !== 0) {
    const len = msg[i]!;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString('ascii'));
    i += len + 1;
  }
  const type = msg.readUInt16BE(i + 1);
  return { name: labels.join('.').toLowerCase(), type, end: i + 5 };
}

function reply(msg: Buffer, end: number, answer: Exclude<DnsAnswer, 'silence'>, type: number): Buffer {
  const rcode = Array.isArray(answer) ? 0 : RCODES[answer.rcode];
  const addresses = Array.isArray(answer) && type === TYPE_A ? answer : [];
  const header = Buffer.alloc(12);
  msg.copy(header, 0, 0, 2); // id
  header.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | rcode, 2); // response, authoritative, RD copied
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(addresses.length, 6);
  const records = addresses.map((a) => {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(TYPE_A, 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(0, 6); // TTL 0: every query is answered afresh
    rr.writeUInt16BE(4, 10);
    a.split('.').forEach((b, k) => rr.writeUInt8(Number(b), 12 + k));
    return rr;
  });
  return Buffer.concat([header, msg.subarray(12, end), ...records]);
}

export async function startDnsServer(answer: TestDnsServer['answer']): Promise<TestDnsServer> {
  const socket: Socket = createSocket('udp4');
  const server: TestDnsServer = {
    port: 0,
    queries: [],
    answer,
    lookup: async () => [],
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (msg, from) => {
    const q = parseQuestion(msg);
    const nth = server.queries.filter((p) => p.name === q.name && p.type === q.type).length;
    server.queries.push({ name: q.name, type: q.type });
    const a = server.answer({ name: q.name, type: q.type }, nth);
    if (a === 'silence') return;
    socket.send(reply(msg, q.end, a, q.type), from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  server.port = (socket.address() as AddressInfo).port;
  const resolver = new Resolver({ timeout: 300, tries: 1 });
  resolver.setServers([`127.0.0.1:${server.port}`]);
  server.lookup = (host) => resolver.resolve4(host);
  return server;
}
