import express, { type Router } from 'express';
import type { OperationList } from '../db/operation-list';
import { idPage } from '../lib/cursor';
import { listOperationsQuery } from './schemas';
import { parse } from './v1.routes';
import { serve } from './routing';
import { operationView } from './views';

/** GET /v1/operations: every accepted command, newest first, filtered and keyset-paged. */
export function createOperationListRouter(deps: { operationList: Pick<OperationList, 'list'> }): Router {
  const router = express.Router({ strict: false });
  serve(router, {
    listOperations: async (req, res) => {
      const q = parse(listOperationsQuery, req.query, 'query');
      const filters = { status: q.status, type: q.type, agentId: q.agentId, since: q.since };
      res.json(await idPage(q, (page) => deps.operationList.list({ ...page, ...filters }), operationView));
    },
  });
  return router;
}
