import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * The console's session: the API token the operator signed in with, kept in a cookie sealed with
 * AES-256-GCM under a key derived from API_TOKEN (so every API process of the deployment opens it,
 * and changing API_TOKEN signs everybody out). The browser's script never sees the token (the cookie
 * is HttpOnly); the server presents it to the API on each request, so the token's scope, expiry and
 * revocation apply to the console exactly as to any other client.
 */

export interface Session {
  /** The API token. */
  token: string;
  /** The token every form of this session carries back (double submit, beside SameSite=Strict). */
  csrf: string;
  /** Epoch milliseconds after which the session is over. */
  expiresAt: number;
}

export const SESSION_COOKIE = 'tailfleet_console';
/** Eight hours: a working day, then sign in again. */
export const DEFAULT_SESSION_TTL_MS = 8 * 3600 * 1000;

const VERSION = 'v1';

export class SessionSealer {
  private readonly key: Buffer;

  constructor(secret: string) {
    this.key = Buffer.from(hkdfSync('sha256', secret, 'tailfleet', 'console session cookie v1', 32));
  }

  /** A new session for `token`, ending after ttlMs. */
  create(token: string, ttlMs: number, now = Date.now()): Session {
    return { token, csrf: randomBytes(24).toString('base64url'), expiresAt: now + ttlMs };
  }

  seal(session: Session): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(JSON.stringify([session.token, session.csrf, session.expiresAt]), 'utf8'), cipher.final()]);
    return [VERSION, iv.toString('base64url'), body.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
  }

  /** The session a cookie holds, or null when it is not one we sealed or it has expired. */
  open(value: string | undefined, now = Date.now()): Session | null {
    if (!value || value.length > 4096) return null;
    const [version, iv, body, tag] = value.split('.');
    if (version !== VERSION || !iv || !body || !tag) return null;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      const plain = Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
      const [token, csrf, expiresAt] = JSON.parse(plain) as [unknown, unknown, unknown];
      if (typeof token !== 'string' || typeof csrf !== 'string' || typeof expiresAt !== 'number') return null;
      if (expiresAt <= now) return null;
      return { token, csrf, expiresAt };
    } catch {
      return null;
    }
  }
}

/** Whether a submitted form carries the session's CSRF token. */
export function csrfMatches(session: Session, submitted: unknown): boolean {
  if (typeof submitted !== 'string') return false;
  const a = Buffer.from(session.csrf);
  const b = Buffer.from(submitted);
  return a.length === b.length && timingSafeEqual(a, b);
}
