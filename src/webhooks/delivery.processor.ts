import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../lib/logger';
import { untilAborted } from '../lib/time';
import { isStallFailure, JobMismatchError, parseJobPayload, STALL_REQUEUE_LIMIT } from '../queues/jobs';
import type { WebhookJobData } from '../queues/queues';
import { createQueueWorker, isFinalFailure, type WorkerSettings } from '../workers';
import { resolveReceiver, WebhookDnsError, WebhookUrlError, type GuardOptions, type Lookup } from './address-guard';
import { postToReceiver } from './receiver-request';
import { signedHeaders } from './signing';
import type { WebhookRepository } from './webhook.repository';

/**
 * Delivers one webhook: reads the delivery and its subscription, resolves the receiver's name once
 * and checks every address (DNS may have been re-pointed since the subscription), POSTs the signed
 * body over a socket pinned to those addresses, within the timeout (resolution included), and
 * records the attempt on the row. A timeout, a resolver failure, a network error or a non-2xx
 * answer (a redirect included) throws, so BullMQ retries with the queue's exponential backoff; the
 * `webhook-id` is the delivery id every time. A refused address fails the delivery for good. A
 * deleted subscription or an already delivered row ends the job without a request.
 */

export interface WebhookDeliveryDeps {
  webhooks: Pick<WebhookRepository, 'findDelivery' | 'recordAttempt' | 'signingSecret'>;
  allowPrivateUrls: boolean;
  timeoutMs: number;
  logger: Logger;
  /** The DNS edge (default: the system resolver). */
  lookup?: Lookup;
  /** Which addresses are refused (default isPrivateAddress; see GuardOptions). */
  refuses?: GuardOptions['refuses'];
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
    const signal = AbortSignal.timeout(deps.timeoutMs);

    let status: number | null = null;
    let error: string | null = null;
    try {
      const receiver = await untilAborted(
        resolveReceiver(delivery.subscription.url, { allowPrivate: deps.allowPrivateUrls, lookup: deps.lookup, refuses: deps.refuses }),
        signal,
      );
      const body = webhookBody(delivery);
      const secret = deps.webhooks.signingSecret(delivery.subscription);
      status = await postToReceiver(receiver, {
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tailfleet-webhooks',
          ...signedHeaders(secret, delivery.id, Math.floor(Date.now() / 1000), body),
        },
        body,
        signal,
      });
      if (status >= 300 && status <= 399) error = `the receiver answered ${status} (redirects are not followed)`;
      else if (status < 200 || status > 299) error = `the receiver answered ${status}`;
    } catch (err) {
      if (err instanceof WebhookUrlError && !(err instanceof WebhookDnsError)) {
        // A refused address is not retried: the subscription has to be made again with a public URL.
        const message = `receiver address refused: ${err.message}`;
        await deps.webhooks.recordAttempt(delivery.id, { at, status: null, durationMs: Date.now() - started, error: message }, 'failed');
        log.warn({ error: message }, 'Webhook not delivered');
        throw new UnrecoverableError(message);
      }
      error = signal.aborted ? `no answer within ${deps.timeoutMs} ms` : (err as Error).message || 'request failed';
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

/**
 * A delivery whose job BullMQ failed without the processor recording it: it stalled too often (its
 * workers died), or it was failed by hand. A stall is our own outage, so the job runs again (the
 * operations' bounded redelivery, counted on the delivery's attempt log); anything else, or a stall
 * past the limit, marks the row failed. Never leaves it pending. Safe to run twice, and a no-op for
 * a row the processor already settled.
 */
export async function settleFailedDelivery(
  webhooks: Pick<WebhookRepository, 'requeueStalled' | 'markFailed'>,
  job: Pick<Job, 'id' | 'retry'>,
  reason: string,
  logger: Logger,
): Promise<'redelivered' | 'failed' | 'settled'> {
  const deliveryId = String(job.id);
  if (isStallFailure(reason) && (await webhooks.requeueStalled(deliveryId, reason, STALL_REQUEUE_LIMIT))) {
    await job.retry('failed');
    logger.warn({ deliveryId, error: reason }, 'Webhook delivery job stalled too often (its workers died); delivered again');
    return 'redelivered';
  }
  if (await webhooks.markFailed(deliveryId)) {
    logger.warn({ deliveryId, error: reason }, 'Webhook delivery job failed in the queue; the delivery is marked failed');
    return 'failed';
  }
  return 'settled';
}

export function createWebhookWorker(deps: {
  connection: Redis;
  prefix: string;
  processor: ReturnType<typeof createWebhookProcessor>;
  webhooks: Pick<WebhookRepository, 'requeueStalled' | 'markFailed'>;
  concurrency: number;
  logger: Logger;
  settings?: Partial<WorkerSettings>;
}): Worker<WebhookJobData> {
  const worker = createQueueWorker<WebhookJobData>('webhooks', deps.processor, deps);
  worker.on('failed', (job, err) => {
    if (!job || !isFinalFailure(job, err)) return;
    // The webhook relay settles it later if this does not get through (see WebhookRelay).
    settleFailedDelivery(deps.webhooks, job, err?.message || job.failedReason || 'job failed', deps.logger).catch((e: unknown) =>
      deps.logger.error({ err: e, queue: 'webhooks', jobId: job.id }, 'Could not settle a failed webhook delivery; the relay will'),
    );
  });
  return worker;
}
