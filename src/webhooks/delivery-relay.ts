import type { Queue } from 'bullmq';
import type { EventNotice, EventSubscriber } from '../events/notifications';
import { errorMessage } from '../errors';
import type { Logger } from '../lib/logger';
import { PeriodicPass } from '../lib/periodic';
import type { WebhookJobData } from '../queues/queues';
import { settleFailedDelivery } from './delivery.processor';
import type { WebhookRepository } from './webhook.repository';
import type { JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';

/**
 * Hands webhook deliveries from PostgreSQL to the `webhooks` queue. The trigger on `events` writes a
 * pending row in the transition's own transaction; this relay adds its job (job id = delivery id, so
 * adding twice is a no-op) and stamps `queued_at`. It runs every interval, and soon after an event
 * notification when the process listens for them. Once a minute it also checks that pending rows
 * queued a while ago still have their job, and adds it again when Redis lost it; a pending row whose
 * job BullMQ failed (the worker's own settling did not get through: it died, or PostgreSQL was away)
 * is settled here the same way (settleFailedDelivery), so no delivery stays pending for ever.
 */

export interface WebhookRelayDeps {
  webhooks: Pick<WebhookRepository, 'unqueued' | 'markQueued' | 'queuedPending' | 'requeueStalled' | 'markFailed' | 'hasSubscriptions'>;
  queue: Queue<WebhookJobData>;
  /** The connection the queue uses (for the one-round-trip presence check). */
  connection: Redis;
  jobOptions: JobsOptions;
  logger: Logger;
  /** Time between passes (default 2000). */
  intervalMs?: number;
  /** Time between checks for jobs Redis lost (default 60000). */
  lostCheckMs?: number;
  batchSize?: number;
}

// The operation statuses whose events carry webhook deliveries (the events trigger).
const OPERATION_ENDS: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

export class WebhookRelay extends PeriodicPass<number> implements EventSubscriber {
  private lastLostCheck = 0;
  private subscribed = true;
  private lastSubscriptionCheck = 0;

  constructor(private readonly deps: WebhookRelayDeps) {
    super(deps.intervalMs ?? 2000);
  }

  /**
   * Event notices matter only while a subscription exists (learned once an interval by the pass): with
   * none, the process's event reader need not read the table for this relay at all.
   */
  interested(): boolean {
    return this.subscribed;
  }

  notice(n: EventNotice): void {
    // Only the events the trigger writes deliveries for: an agent's, an operation's end, a finding's
    // (an operation's claims, hand-backs and retries write none, and each nudge is a query).
    if (n.entityType === 'agent' || n.entityType === 'finding' || (n.entityType === 'operation' && OPERATION_ENDS.has(n.toStatus))) this.nudge();
  }

  resync(): void {
    this.nudge();
  }

  protected passFailed(err: unknown): void {
    this.deps.logger.warn({ err: { message: errorMessage(err) } }, 'Webhook relay pass failed; trying again next interval');
  }

  /** One pass: how many deliveries were handed to the queue. */
  protected async pass(): Promise<number> {
    const batch = this.deps.batchSize ?? 500;
    if (Date.now() - this.lastSubscriptionCheck >= (this.deps.intervalMs ?? 2000)) {
      this.lastSubscriptionCheck = Date.now();
      this.subscribed = await this.deps.webhooks.hasSubscriptions();
    }
    let added = 0;
    for (;;) {
      const rows = await this.deps.webhooks.unqueued(batch);
      if (rows.length === 0) break;
      await this.deps.queue.addBulk(
        rows.map((d) => ({
          name: d.type,
          data: { deliveryId: d.id, subscriptionId: d.subscriptionId, type: d.type },
          opts: { ...this.deps.jobOptions, jobId: d.id },
        })),
      );
      await this.deps.webhooks.markQueued(rows.map((d) => d.id));
      added += rows.length;
      if (rows.length < batch) break;
    }
    const lostCheckMs = this.deps.lostCheckMs ?? 60_000;
    if (Date.now() - this.lastLostCheck >= lostCheckMs) {
      this.lastLostCheck = Date.now();
      added += await this.requeueLost(lostCheckMs, batch);
    }
    return added;
  }

  private async requeueLost(olderThanMs: number, limit: number): Promise<number> {
    const rows = await this.deps.webhooks.queuedPending(olderThanMs, limit);
    if (rows.length === 0) return 0;
    const failedKey = this.deps.queue.toKey('failed');
    const pipeline = this.deps.connection.pipeline();
    for (const d of rows) pipeline.exists(this.deps.queue.toKey(d.id)).zscore(failedKey, d.id);
    const results = (await pipeline.exec()) ?? [];
    let added = 0;
    for (let i = 0; i < rows.length; i++) {
      const d = rows[i]!;
      const [existsErr, exists] = results[2 * i] ?? [null, 1];
      const [failedErr, failedAt] = results[2 * i + 1] ?? [null, null];
      if (existsErr || failedErr) continue;
      if (exists === 1 && failedAt !== null) {
        const job = await this.deps.queue.getJob(d.id);
        if (job && (await job.isFailed())) {
          const outcome = await settleFailedDelivery(this.deps.webhooks, job, job.failedReason || 'job failed', this.deps.logger);
          if (outcome === 'redelivered') added++;
        }
        continue;
      }
      if (exists === 1) continue;
      await this.deps.queue.add(d.type, { deliveryId: d.id, subscriptionId: d.subscriptionId, type: d.type }, { ...this.deps.jobOptions, jobId: d.id });
      added++;
      this.deps.logger.warn({ deliveryId: d.id }, 'Webhook delivery had no job in the queue; added it again');
    }
    return added;
  }
}
