import { InvalidCursorError } from '../errors';

/** Keyset cursors are opaque to clients (base64url of the last row's key) so their form can change. */
export function encodeCursor(value: string): string {
  return Buffer.from(value, 'utf8').toString('base64url');
}

/** The key a cursor names; InvalidCursorError (a 400 on query.cursor) when it is not one we handed out. */
export function decodeCursor(cursor: string, valid: RegExp | ((value: string) => boolean)): string {
  const value = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!(typeof valid === 'function' ? valid(value) : valid.test(value))) throw new InvalidCursorError();
  return value;
}
