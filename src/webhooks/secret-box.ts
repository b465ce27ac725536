import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { PermanentError } from '../errors';
import { SECRET_PREFIX } from './signing';

/**
 * Webhook secrets at rest. Signing needs the secret itself (a hash would not do), so it is kept
 * encrypted with AES-256-GCM under WEBHOOK_SECRET_KEY, bound to its subscription's id (additional
 * authenticated data: a sealed secret copied onto another row does not open). The stored form is
 *
 *   enc:v1:<key id>:<base64url(12-byte IV ‖ ciphertext ‖ 16-byte tag)>
 *
 * where the key id is derived from the key (the first 12 hex digits of a SHA-256 over it), so
 * operators never name keys. Rotation: the new key becomes WEBHOOK_SECRET_KEY and the old one moves
 * to WEBHOOK_SECRET_KEYS_PREVIOUS; both open, only the primary seals, and `needsReseal` tells which
 * rows to seal again (done at start-up, see WebhookRepository.resealSecrets). Without a key secrets
 * are stored as they are (`whsec_…`), which is also how rows written before encryption look; both
 * forms are read.
 */

export interface WebhookSecretKeys {
  /** Seals and opens. 32 bytes. */
  primary: Buffer;
  /** Open only: keys rotated out whose rows may not be re-sealed yet. */
  previous: Buffer[];
}

const FORMAT = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A webhook secret key of the wrong size, or a stored secret that no configured key opens. */
export class WebhookSecretError extends PermanentError {
  override readonly name = 'WebhookSecretError';
  readonly code = 'webhook_secret';
}

export function webhookKeyId(key: Buffer): string {
  return createHash('sha256').update('tailfleet webhook secret key\0').update(key).digest('hex').slice(0, 12);
}

function aad(subscriptionId: string): Buffer {
  return Buffer.from(`webhook_subscriptions:${subscriptionId}`);
}

export class WebhookSecretBox {
  private readonly primaryId: string | null;
  private readonly keys = new Map<string, Buffer>();

  constructor(keys: WebhookSecretKeys | null) {
    this.primaryId = keys ? webhookKeyId(keys.primary) : null;
    for (const key of keys ? [keys.primary, ...keys.previous] : []) {
      if (key.length !== 32) throw new WebhookSecretError('a webhook secret key is 32 bytes');
      this.keys.set(webhookKeyId(key), key);
    }
  }

  /** Whether new secrets are encrypted (a key is configured). */
  get encrypts(): boolean {
    return this.primaryId !== null;
  }

  /** The stored form of `secret` for the subscription `subscriptionId`. */
  seal(secret: string, subscriptionId: string): string {
    if (this.primaryId === null) return secret;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.primaryId)!, iv);
    cipher.setAAD(aad(subscriptionId));
    const sealed = Buffer.concat([iv, cipher.update(secret, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return `${FORMAT}${this.primaryId}:${sealed.toString('base64url')}`;
  }

  /** The secret a stored form holds; WebhookSecretError when its key is not configured or it was tampered with. */
  open(stored: string, subscriptionId: string): string {
    if (!stored.startsWith(FORMAT)) {
      if (stored.startsWith(SECRET_PREFIX)) return stored;
      throw new WebhookSecretError('the stored webhook secret has an unknown form');
    }
    const [keyId = '', payload = ''] = stored.slice(FORMAT.length).split(':');
    const key = this.keys.get(keyId);
    if (!key) {
      throw new WebhookSecretError(
        `the webhook secret is encrypted with key ${keyId}, which is neither WEBHOOK_SECRET_KEY nor in WEBHOOK_SECRET_KEYS_PREVIOUS`,
      );
    }
    const sealed = Buffer.from(payload, 'base64url');
    if (sealed.length <= IV_BYTES + TAG_BYTES) throw new WebhookSecretError('the stored webhook secret is truncated');
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
      decipher.setAAD(aad(subscriptionId));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new WebhookSecretError(`the webhook secret does not decrypt with key ${keyId} (altered, or moved from another subscription)`);
    }
  }

  /** Whether a stored form should be sealed again: plaintext while a key is set, or sealed under a previous key. */
  needsReseal(stored: string): boolean {
    return this.primaryId !== null && !stored.startsWith(`${FORMAT}${this.primaryId}:`);
  }
}
