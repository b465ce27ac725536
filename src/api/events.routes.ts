import express, { type Router } from 'express';
import type { ConcurrencyLimit } from '../events/concurrency-limit';
import type { EventStream } from '../events/event-stream';
import { admit } from './admission';
import { invalid, parse } from './v1.routes';
import { serve } from './routing';
import { eventStreamQuery, LAST_EVENT_ID } from './webhook.schemas';

/** GET /v1/events/stream: every event as it is written, as Server-Sent Events (read scope). */
export function createEventsRouter(deps: { stream: Pick<EventStream, 'open'>; limit: ConcurrencyLimit }): Router {
  const router = express.Router({ strict: false });
  serve(router, {
    streamEvents: async (req, res) => {
      const q = parse(eventStreamQuery, req.query, 'query');
      const lastEventId = req.get('last-event-id');
      if (lastEventId !== undefined && !LAST_EVENT_ID.test(lastEventId)) {
        throw invalid([{ path: 'headers.last-event-id', message: 'must be the id of an event (a non-negative integer)' }]);
      }
      // Held for as long as the connection is: a stream ended from our side still has its socket
      // until the client reads the end or the grace period runs out.
      const release = admit(deps.limit, res, 'event streams');
      res.once('close', release);
      try {
        await deps.stream.open(res, { agentId: q.agentId?.toLowerCase(), lastEventId });
      } catch (err) {
        release();
        throw err;
      }
    },
  });
  return router;
}
