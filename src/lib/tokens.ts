import { createHash, randomBytes } from 'node:crypto';

/** API token secrets: `tf_` + base64url of 32 random bytes (43 characters, no padding). */
export const TOKEN_PATTERN = /^tf_[A-Za-z0-9_-]{43}$/;
const TOKEN_PREFIX_LENGTH = 10;

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function generateToken(): { token: string; tokenHash: string; tokenPrefix: string } {
  const token = `tf_${randomBytes(32).toString('base64url')}`;
  return { token, tokenHash: hashToken(token), tokenPrefix: token.slice(0, TOKEN_PREFIX_LENGTH) };
}
