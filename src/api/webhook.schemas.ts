import { z } from 'zod';
import { WEBHOOK_DELIVERY_STATUSES, WEBHOOK_EVENT_TYPES } from '../entities';
import { boundedString, cursorParam, intParam, requestComponents, responseComponents, UUID } from './schemas';

/** Schemas of the waiting, event stream and webhook routes (registered in contract.ts). */

const uuid = z.uuid();
const dateTime = z.iso.datetime({ offset: true });

export const MAX_WAIT_SECONDS = 60;

export const getOperationQuery = z.strictObject({
  wait: intParam(0, MAX_WAIT_SECONDS)
    .meta({
      description:
        'Long poll: answer as soon as the operation is succeeded, failed or cancelled, or with its current state ' +
        `after this many seconds (at most ${MAX_WAIT_SECONDS}).`,
    })
    .optional(),
});

export const eventStreamQuery = z.strictObject({
  agentId: z.string().regex(UUID, 'must be a UUID')
    .meta({ description: 'Only events of this agent (its instances, jobs and operations included).', format: 'uuid' })
    .optional(),
});

// 18 digits always fit a bigint.
export const LAST_EVENT_ID = /^\d{1,18}$/;

export const createWebhookBody = z.strictObject({
  url: boundedString(2000)
    .meta({ description: 'An http(s) URL on a public address: loopback, private and link-local addresses are refused.' }),
  events: z
    .array(z.enum(WEBHOOK_EVENT_TYPES, { error: () => `must be one of ${WEBHOOK_EVENT_TYPES.join(', ')}` }))
    .min(1, 'must name at least one event')
    .max(WEBHOOK_EVENT_TYPES.length * 2)
    .meta({ description: 'Event types to receive; omitted: all of them.' })
    .optional(),
});
requestComponents.add(createWebhookBody, { id: 'CreateWebhook' });

export const listDeliveriesQuery = z.strictObject({
  limit: intParam(1, 100).meta({ default: 20 }).optional(),
  cursor: cursorParam.optional(),
});

export const webhookSchema = z.object({
  id: uuid,
  url: z.string(),
  events: z.array(z.enum(WEBHOOK_EVENT_TYPES)),
  createdBy: z.string(),
  createdAt: dateTime,
});
responseComponents.add(webhookSchema, { id: 'Webhook' });

export const webhookCreatedSchema = webhookSchema.extend({
  secret: z.string().meta({
    description: 'whsec_ + base64 of 32 random bytes: the signing key. Shown only in this answer.',
  }),
});
responseComponents.add(webhookCreatedSchema, { id: 'WebhookCreated' });

export const webhookListSchema = z.object({ items: z.array(webhookSchema) });
responseComponents.add(webhookListSchema, { id: 'WebhookList' });

export const webhookDeliverySchema = z.object({
  id: uuid.meta({ description: 'The webhook-id header the receiver gets, the same on every retry.' }),
  subscriptionId: uuid,
  eventId: z.string().meta({ description: 'The event that caused it (see the event stream).' }),
  type: z.enum(WEBHOOK_EVENT_TYPES),
  status: z.enum(WEBHOOK_DELIVERY_STATUSES),
  attempts: z.int(),
  attemptLog: z.array(
    z.object({
      at: dateTime,
      status: z.int().nullable().meta({ description: "The receiver's HTTP status; null when none came." }),
      durationMs: z.int(),
      error: z.string().nullable(),
    }),
  ),
  data: z.record(z.string(), z.unknown()).meta({ description: 'The body\'s `data`.' }),
  occurredAt: dateTime.meta({ description: "The body's `timestamp`." }),
  createdAt: dateTime,
  queuedAt: dateTime.nullable(),
  deliveredAt: dateTime.nullable(),
});
responseComponents.add(webhookDeliverySchema, { id: 'WebhookDelivery' });

export const webhookDeliveryPageSchema = z.object({
  items: z.array(webhookDeliverySchema),
  nextCursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last.' }),
});
responseComponents.add(webhookDeliveryPageSchema, { id: 'WebhookDeliveryPage' });
