import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../lib/logger';
import { JobMismatchError, parseJobPayload } from '../queues/jobs';
import type { WebhookJobData } from '../queues/queues';
import { checkWebhookUrl, WebhookUrlError, type Lookup } from './address-guard';
import { signedHeaders } from './signing';
import type { WebhookRepository } from './webhook.repository';

/**
 * Delivers one webhook: reads the delivery and its subscription, checks the receiver's address again
 * (DNS may have been re-pointed since the subscription), POSTs the signed body with a timeout and
 * records the attempt on the row. A timeout, a network error or a non-2xx answer throws, so BullMQ
 * retries with the queue's exponential backoff; the `webhook-id` is the delivery id every time.
 * A deleted subscription or an already delivered row ends the job without a request.
 */

export interface WebhookDeliveryDeps {
  webhooks: Pick<WebhookRepository, 'findDelivery' | 'recordAttempt'>;
  allowPrivateUrls: boolean;
  timeoutMs: number;
  logger: Logger;
  fetch?: typeof fetch;
  lookup?: Lookup;
}

export interface WebhookOutcome {
  delivered: boolean;
  status?: number;
  skipped?: 'gone' | 'delivered';
}

/** The body the receiver gets (and the one the signature covers). */
export function webhookBody(d: { type: string; occurredAt: Date; data: unknown }): string {
  return JSON.stringify({ type: d.type, timestamp: d.occurredAt.toISOString(), data: d.data });
}

export function createWebhookProcessor(deps: WebhookDeliveryDeps) {
  const doFetch = deps.fetch ?? fetch;
  return async (job: Job<WebhookJobData>): Promise<WebhookOutcome> => {
    let data: WebhookJobData;
    try {
      data = parseJobPayload('webhooks', job.data);
      if (job.id !== data.deliveryId) throw new JobMismatchError(`job id ${job.id} is not its delivery id ${data.deliveryId}`);
    } catch (err) {
      throw new UnrecoverableError((err as Error).message);
    }
    const delivery = await deps.webhooks.findDelivery(data.deliveryId);
    if (!delivery) return { delivered: false, skipped: 'gone' };
    if (delivery.status === 'succeeded') return { delivered: true, skipped: 'delivered' };
    const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    const started = Date.now();
    const at = new Date(started).toISOString();
    const log = deps.logger.child({ deliveryId: delivery.id, subscriptionId: delivery.subscriptionId, type: delivery.type });

    try {
      await checkWebhookUrl(delivery.subscription.url, { allowPrivate: deps.allowPrivateUrls, lookup: deps.lookup });
    } catch (err) {
      const message = err instanceof WebhookUrlError ? `receiver address refused: ${err.message}` : (err as Error).message;
      // A refused address is not retried: the subscription has to be made again with a public URL.
      await deps.webhooks.recordAttempt(delivery.id, { at, status: null, durationMs: Date.now() - started, error: message }, 'failed');
      log.warn({ error: message }, 'Webhook not delivered');
      throw new UnrecoverableError(message);
    }

    const body = webhookBody(delivery);
    let status: number | null = null;
    let error: string | null = null;
    try {
      const res = await doFetch(delivery.subscription.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tailfleet-webhooks',
          ...signedHeaders(delivery.subscription.secret, delivery.id, Math.floor(Date.now() / 1000), body),
        },
        body,
        // A redirect could lead anywhere, private addresses included: it counts as a failed attempt.
        redirect: 'manual',
        signal: AbortSignal.timeout(deps.timeoutMs),
      });
      status = res.status;
      await res.body?.cancel().catch(() => undefined);
      if (status < 200 || status > 299) error = `the receiver answered ${status}`;
    } catch (err) {
      const name = (err as Error).name;
      error = name === 'TimeoutError' || name === 'AbortError' ? `no answer within ${deps.timeoutMs} ms` : describeFetchError(err);
    }
    const ok = error === null;
    await deps.webhooks.recordAttempt(
      delivery.id,
      { at, status, durationMs: Date.now() - started, error },
      ok ? 'succeeded' : lastAttempt ? 'failed' : 'pending',
    );
    if (!ok) {
      log.info({ status, error, attempt: job.attemptsMade + 1 }, lastAttempt ? 'Webhook delivery failed for good' : 'Webhook delivery failed; retrying');
      throw new Error(error!);
    }
    return { delivered: true, status: status! };
  };
}

function describeFetchError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message ?? 'request failed';
}

export function createWebhookWorker(deps: {
  connection: Redis;
  prefix: string;
  processor: ReturnType<typeof createWebhookProcessor>;
  concurrency: number;
  logger: Logger;
}): Worker<WebhookJobData> {
  const worker = new Worker<WebhookJobData>('webhooks', deps.processor, {
    connection: deps.connection,
    prefix: deps.prefix,
    concurrency: deps.concurrency,
    autorun: false,
  });
  worker.on('error', (err) => deps.logger.error({ err, queue: 'webhooks' }, 'Worker error'));
  return worker;
}
