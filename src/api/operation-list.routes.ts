import express, { type Router } from 'express';
import { z } from 'zod';
import type { OperationList } from '../db/operation-list';
import { OPERATION_STATUSES, OPERATION_TYPES } from '../entities';
import { intParam, invalid, needs, parse, route } from './v1.routes';
import { operationView } from './views';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const csvOf = <T extends readonly [string, ...string[]]>(values: T) =>
  z
    .string()
    .transform((s) => s.split(',').map((v) => v.trim()).filter(Boolean))
    .pipe(z.array(z.enum(values, { error: () => `must be a comma-separated list of ${values.join(', ')}` })));

const listOperationsQuery = z.strictObject({
  limit: intParam(1, 100).optional(),
  cursor: z.string().min(1).max(200).optional(),
  status: csvOf(OPERATION_STATUSES).optional(),
  type: csvOf(OPERATION_TYPES).optional(),
  agentId: z.string().regex(UUID, 'must be a UUID').transform((s) => s.toLowerCase()).optional(),
  since: z.iso
    .datetime({ offset: true, error: () => 'must be an ISO 8601 date-time such as 2030-01-31T12:00:00Z' })
    .transform((s) => new Date(s))
    .optional(),
});

// The cursor names the last operation of the page; opaque so its form can change.
const encodeCursor = (operationId: string) => Buffer.from(operationId, 'utf8').toString('base64url');

function decodeCursor(cursor: string): string {
  const value = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!UUID.test(value)) throw invalid([{ path: 'query.cursor', message: 'The cursor is not one this API handed out.' }]);
  return value.toLowerCase();
}

/** GET /v1/operations: every accepted command, newest first, filtered and keyset-paged. */
export function createOperationListRouter(deps: { operationList: Pick<OperationList, 'list'> }): Router {
  const router = express.Router({ strict: false });
  route(router, '/operations', {
    get: needs('read', async (req, res) => {
      const q = parse(listOperationsQuery, req.query, 'query');
      const limit = q.limit ?? 20;
      const page = await deps.operationList.list({
        limit,
        status: q.status,
        type: q.type,
        agentId: q.agentId,
        since: q.since,
        after: q.cursor === undefined ? undefined : decodeCursor(q.cursor),
      });
      const last = page.items[page.items.length - 1];
      res.json({
        items: page.items.map(operationView),
        limit,
        nextCursor: page.more && last ? encodeCursor(last.id) : null,
      });
    }),
  });
  return router;
}
