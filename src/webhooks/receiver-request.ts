import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { UnavailableError } from '../errors';
import type { Receiver } from './address-guard';

/**
 * The one request of a delivery attempt, sent over a socket that can only reach the addresses the
 * address guard checked: the connection's `lookup` answers from the receiver's resolved addresses
 * instead of asking DNS again, so a name that answers differently a moment later (TTL 0, a
 * rebinding resolver) is never connected to. The URL keeps its host name, so TLS still sends it as
 * SNI and verifies the certificate against it, and the Host header carries it.
 *
 * Redirects are not followed (node:http never does): a 3xx is the receiver's answer, a failed
 * attempt like any other non-2xx. Each attempt opens its own connection (no pooled socket outlives
 * the check that vetted it).
 */

/** The request to a receiver failed below HTTP (refused, reset, TLS): an attempt to make again later. */
export class ReceiverRequestError extends UnavailableError {
  /** The socket's error code (ECONNREFUSED, DEPTH_ZERO_SELF_SIGNED_CERT …), or `request_failed`. */
  override readonly code: string;
  constructor(message: string, code: string | undefined) {
    super(message);
    this.name = 'ReceiverRequestError';
    this.code = code ?? 'request_failed';
  }
}

/** A `lookup` that only ever answers with the checked addresses (of the family asked for, if any). */
export function pinnedLookup(addresses: Receiver['addresses']): LookupFunction {
  return (hostname, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    const candidates = addresses.filter((a) => !family || a.family === family);
    if (candidates.length === 0) {
      const err: NodeJS.ErrnoException = new Error(`no checked IPv${family} address for ${hostname}`);
      err.code = 'ENOTFOUND';
      callback(err, '', 0);
      return;
    }
    if (options.all) callback(null, candidates);
    else callback(null, candidates[0]!.address, candidates[0]!.family);
  };
}

/** POSTs `body` to the receiver; resolves with the HTTP status once the answer's head arrives. */
export function postToReceiver(
  receiver: Receiver,
  init: { headers: Record<string, string>; body: string; signal: AbortSignal },
): Promise<number> {
  const send = receiver.url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    const req = send(receiver.url, {
      method: 'POST',
      headers: { ...init.headers, 'content-length': String(Buffer.byteLength(init.body)) },
      lookup: pinnedLookup(receiver.addresses),
      agent: false,
      signal: init.signal,
    });
    req.on('response', (res: IncomingMessage) => {
      // The body is not wanted: only the status counts, and a receiver may answer at length.
      res.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.name === 'AbortError') reject(err);
      // The code alone (ECONNREFUSED, DEPTH_ZERO_SELF_SIGNED_CERT …) is what the attempt log shows.
      else reject(new ReceiverRequestError(err.code ?? err.message, err.code));
    });
    req.end(init.body);
  });
}
