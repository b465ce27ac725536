import express, { type Router } from 'express';
import { WEBHOOK_EVENT_TYPES, type WebhookDelivery, type WebhookSubscription } from '../entities';
import { checkWebhookUrl, WebhookUrlError, type Lookup } from '../webhooks/address-guard';
import { newWebhookSecret } from '../webhooks/signing';
import type { WebhookRepository } from '../webhooks/webhook.repository';
import { actorOf } from './auth';
import { HttpProblem } from './problem';
import { invalid, parse, uuidParam } from './v1.routes';
import { serve } from './routing';
import { createWebhookBody, listDeliveriesQuery, type webhookDeliverySchema, type webhookSchema } from './webhook.schemas';
import type { ViewOf } from './views';

export interface WebhooksRouterDeps {
  webhooks: Pick<WebhookRepository, 'create' | 'list' | 'get' | 'delete' | 'listDeliveries'>;
  allowPrivateUrls: boolean;
  lookup?: Lookup;
}

export function webhookView(s: WebhookSubscription): ViewOf<typeof webhookSchema> {
  return { id: s.id, url: s.url, events: s.events, createdBy: s.createdBy, createdAt: s.createdAt };
}

export function webhookDeliveryView(d: WebhookDelivery): ViewOf<typeof webhookDeliverySchema> {
  return {
    id: d.id,
    subscriptionId: d.subscriptionId,
    eventId: d.eventId,
    type: d.type,
    status: d.status,
    attempts: d.attempts,
    attemptLog: d.attemptLog,
    data: d.data,
    occurredAt: d.occurredAt,
    createdAt: d.createdAt,
    queuedAt: d.queuedAt,
    deliveredAt: d.deliveredAt,
  };
}

/** /v1/webhooks: subscriptions and their deliveries (admin scope). The secret is shown once, in the 201. */
export function createWebhooksRouter(deps: WebhooksRouterDeps): Router {
  const router = express.Router({ strict: false });
  serve(router, {
    createWebhook: async (req, res) => {
      const input = parse(createWebhookBody, req.body ?? {}, 'body');
      try {
        await checkWebhookUrl(input.url, { allowPrivate: deps.allowPrivateUrls, lookup: deps.lookup });
      } catch (err) {
        if (err instanceof WebhookUrlError) throw invalid([{ path: 'body.url', message: err.message }]);
        throw err;
      }
      const events = input.events ? WEBHOOK_EVENT_TYPES.filter((t) => input.events!.includes(t)) : [...WEBHOOK_EVENT_TYPES];
      const secret = newWebhookSecret();
      const row = await deps.webhooks.create({ url: input.url, events, secret, createdBy: actorOf(res) });
      res.setHeader('Cache-Control', 'no-store');
      res.location(`/v1/webhooks/${row.id}`);
      res.status(201).json({ ...webhookView(row), secret });
    },
    listWebhooks: async (_req, res) => {
      res.json({ items: (await deps.webhooks.list()).map(webhookView) });
    },
  });
  serve(router, {
    getWebhook: async (req, res) => {
      const id = uuidParam(req);
      const row = await deps.webhooks.get(id);
      if (!row) throw new HttpProblem('not-found', `Webhook ${id} not found`);
      res.json(webhookView(row));
    },
    deleteWebhook: async (req, res) => {
      const id = uuidParam(req);
      if (!(await deps.webhooks.delete(id))) throw new HttpProblem('not-found', `Webhook ${id} not found`);
      res.status(204).end();
    },
  });
  serve(router, {
    listWebhookDeliveries: async (req, res) => {
      const id = uuidParam(req);
      const q = parse(listDeliveriesQuery, req.query, 'query');
      if (!(await deps.webhooks.get(id))) throw new HttpProblem('not-found', `Webhook ${id} not found`);
      // An invalid cursor throws InvalidCursorError: a 400 on query.cursor (see toProblem).
      const page = await deps.webhooks.listDeliveries(id, { limit: q.limit ?? 20, cursor: q.cursor });
      res.json({ items: page.items.map(webhookDeliveryView), nextCursor: page.nextCursor });
    },
  });
  return router;
}
