import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Webhook secrets and signatures as the Standard Webhooks specification defines them
 * (https://www.standardwebhooks.com): the secret is `whsec_` + base64 of random bytes, and each
 * request carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`,
 * `v1,` + base64(HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")).
 */

export const SECRET_PREFIX = 'whsec_';
const SECRET_BYTES = 32;

export function newWebhookSecret(): string {
  return SECRET_PREFIX + randomBytes(SECRET_BYTES).toString('base64');
}

function key(secret: string): Buffer {
  if (!secret.startsWith(SECRET_PREFIX)) throw new Error('a webhook secret starts with whsec_');
  return Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
}

export function signWebhook(secret: string, id: string, timestampSeconds: number, body: string): string {
  const mac = createHmac('sha256', key(secret)).update(`${id}.${timestampSeconds}.${body}`).digest('base64');
  return `v1,${mac}`;
}

export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

export function signedHeaders(secret: string, id: string, timestampSeconds: number, body: string): SignedHeaders {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestampSeconds),
    'webhook-signature': signWebhook(secret, id, timestampSeconds, body),
  };
}

/** Whether one of the space-separated signatures matches (what a receiver does). */
export function verifyWebhook(secret: string, headers: SignedHeaders, body: string): boolean {
  const expected = Buffer.from(signWebhook(secret, headers['webhook-id'], Number(headers['webhook-timestamp']), body));
  return headers['webhook-signature'].split(' ').some((candidate) => {
    const given = Buffer.from(candidate);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
