import express, { type Router } from 'express';
import type { EventStream } from '../events/event-stream';
import { invalid, needs, parse, route } from './v1.routes';
import { eventStreamQuery, LAST_EVENT_ID } from './webhook.schemas';

/** GET /v1/events/stream: every event as it is written, as Server-Sent Events (read scope). */
export function createEventsRouter(deps: { stream: Pick<EventStream, 'open'> }): Router {
  const router = express.Router({ strict: false });
  route(router, '/events/stream', {
    get: needs('read', async (req, res) => {
      const q = parse(eventStreamQuery, req.query, 'query');
      const lastEventId = req.get('last-event-id');
      if (lastEventId !== undefined && !LAST_EVENT_ID.test(lastEventId)) {
        throw invalid([{ path: 'headers.last-event-id', message: 'must be the id of an event (a non-negative integer)' }]);
      }
      await deps.stream.open(res, { agentId: q.agentId?.toLowerCase(), lastEventId });
    }),
  });
  return router;
}
