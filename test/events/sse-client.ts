import { request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';

/** Small Server-Sent Events readers for the tests (ids, event names, data and comments as they arrive). */

export interface SseMessage {
  id: string | undefined;
  /** The `event:` field, when the server named the event. */
  event?: string;
  data: any;
}

export interface SseConnection {
  status: number;
  contentType: string | null;
  messages: SseMessage[];
  comments: string[];
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

/** Takes every complete block off the front of `buffer` into `into`; answers what is left (an unfinished block). */
export function parseSse(buffer: string, into: { messages: SseMessage[]; comments: string[] }): string {
  let end: number;
  while ((end = buffer.indexOf('\n\n')) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let id: string | undefined;
    let event: string | undefined;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) into.comments.push(line.slice(1).trim());
      else if (line.startsWith('id: ')) id = line.slice(4);
      else if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length > 0) into.messages.push({ id, ...(event ? { event } : {}), data: JSON.parse(data.join('\n')) });
  }
  return buffer;
}

export async function openSse(url: string, token: string, headers: Record<string, string> = {}): Promise<SseConnection> {
  const abort = new AbortController();
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...headers }, signal: abort.signal });
  const conn: SseConnection = {
    status: res.status,
    contentType: res.headers.get('content-type'),
    messages: [],
    comments: [],
    ended: Promise.resolve(),
    close: () => abort.abort(),
  };
  if (res.status !== 200 || !res.body) {
    await res.text().catch(() => undefined);
    return conn;
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  conn.ended = (async () => {
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer = parseSse(buffer + value, conn);
      }
    } catch {
      // aborted by close()
    }
  })();
  return conn;
}

/**
 * A stream whose reader stalls: node's HTTP client reads until the response's own small buffer is
 * full, then stops reading the socket, so the server's writes pile up in the kernel's buffers and
 * then its own. `read()` starts reading and answers everything once the server ends the response.
 */
export interface StalledSse {
  status: number;
  headers: IncomingHttpHeaders;
  read(): Promise<{ messages: SseMessage[]; comments: string[] }>;
  destroy(): void;
}

export function openStalledSse(url: string, token: string, headers: Record<string, string> = {}): Promise<StalledSse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...headers } }, (res: IncomingMessage) => {
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        read: () =>
          new Promise((done, fail) => {
            const into = { messages: [] as SseMessage[], comments: [] as string[] };
            let buffer = '';
            res.setEncoding('utf8');
            res.on('data', (text: string) => (buffer = parseSse(buffer + text, into)));
            res.once('end', () => done(into));
            res.once('error', fail);
          }),
        destroy: () => req.destroy(),
      });
    });
    req.once('error', reject);
    req.end();
  });
}
