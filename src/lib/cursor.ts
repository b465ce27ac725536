import { UUID } from '../db/uuid';
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

/** The row id a listing of rows keyed by UUID continues after; undefined for the first page. */
export function afterIdCursor(cursor: string | undefined, valid: RegExp): string | undefined {
  return cursor === undefined ? undefined : decodeCursor(cursor, valid).toLowerCase();
}

/** The cursor of the page after `items` (keyed by their ids), or null when there is none. */
export function nextIdCursor(page: { items: ReadonlyArray<{ id: string }>; more: boolean }): string | null {
  const last = page.items[page.items.length - 1];
  return page.more && last ? encodeCursor(last.id) : null;
}

/**
 * One page of a listing of rows keyed by UUID: the query's limit (default 20) and cursor go to
 * `list`, the rows come back through `view` with the limit and the cursor of the next page.
 */
export async function idPage<Row extends { id: string }, View>(
  query: { limit?: number; cursor?: string },
  list: (page: { limit: number; after: string | undefined }) => Promise<{ items: Row[]; more: boolean }>,
  view: (row: Row) => View,
): Promise<{ items: View[]; limit: number; nextCursor: string | null }> {
  const limit = query.limit ?? 20;
  const page = await list({ limit, after: afterIdCursor(query.cursor, UUID) });
  return { items: page.items.map(view), limit, nextCursor: nextIdCursor(page) };
}
