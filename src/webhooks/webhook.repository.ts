import { randomUUID } from 'node:crypto';
import type { DataSource, Repository } from 'typeorm';
import {
  WebhookDelivery,
  WebhookSubscription,
  type WebhookAttempt,
  type WebhookDeliveryStatus,
  type WebhookEventType,
} from '../entities';
import { decodeCursor, encodeCursor } from '../lib/cursor';
import { isUuid } from '../db/uuid';
import { WebhookSecretBox } from './secret-box';

/**
 * Webhook subscriptions and their deliveries. Delivery rows are written by the trigger on `events`
 * (see the webhooks migration), queued by the webhook relay and updated by the delivery processor.
 * Secrets are written sealed by the secret box (secret-box.ts); `secret` on a row is that stored form.
 */

/** How the attempt log words a job BullMQ failed for stalling (counted to bound the redeliveries). */
export const STALLED_ATTEMPT = 'job stalled: its worker stopped';

export interface DeliveryPage {
  items: WebhookDelivery[];
  nextCursor: string | null;
}

// A page of deliveries ends at a creation time and id (ties broken by id): the cursor holds both.
const deliveryKey = (d: WebhookDelivery) => `${d.createdAt.toISOString()}|${d.id}`;

function parseDeliveryKey(key: string): { createdAt: Date; id: string } {
  const [at, id] = key.split('|');
  return { createdAt: new Date(at ?? ''), id: id ?? '' };
}

const isDeliveryKey = (key: string) => {
  const { createdAt, id } = parseDeliveryKey(key);
  return !Number.isNaN(createdAt.getTime()) && isUuid(id);
};

export class WebhookRepository {
  private readonly subscriptions: Repository<WebhookSubscription>;
  private readonly deliveries: Repository<WebhookDelivery>;
  private readonly secrets: WebhookSecretBox;

  constructor(deps: { dataSource: DataSource; secrets?: WebhookSecretBox }) {
    this.subscriptions = deps.dataSource.getRepository(WebhookSubscription);
    this.deliveries = deps.dataSource.getRepository(WebhookDelivery);
    this.secrets = deps.secrets ?? new WebhookSecretBox(null);
  }

  /** Stores a subscription; `secret` is the plain `whsec_…`, stored sealed. */
  async create(input: { url: string; events: WebhookEventType[]; secret: string; createdBy: string }): Promise<WebhookSubscription> {
    // The id is chosen here: the sealed secret is bound to it.
    const id = randomUUID();
    await this.subscriptions.insert({ ...input, id, secret: this.secrets.seal(input.secret, id) });
    return this.subscriptions.findOneByOrFail({ id });
  }

  /** The plain secret a subscription signs with (WebhookSecretError when its key is not configured). */
  signingSecret(subscription: Pick<WebhookSubscription, 'id' | 'secret'>): string {
    return this.secrets.open(subscription.secret, subscription.id);
  }

  /**
   * Seals again every secret stored in clear or under a previous key, with the primary key. Safe in
   * several processes at once (each row changes only from the form it was read in). Rows whose key
   * is not configured are counted as unreadable and left alone.
   */
  async resealSecrets(): Promise<{ resealed: number; unreadable: string[] }> {
    const out = { resealed: 0, unreadable: [] as string[] };
    if (!this.secrets.encrypts) return out;
    const rows = await this.subscriptions.find({ select: { id: true, secret: true } });
    for (const row of rows) {
      if (!this.secrets.needsReseal(row.secret)) continue;
      let plain: string;
      try {
        plain = this.secrets.open(row.secret, row.id);
      } catch {
        out.unreadable.push(row.id);
        continue;
      }
      const result = await this.subscriptions.update({ id: row.id, secret: row.secret }, { secret: this.secrets.seal(plain, row.id) });
      out.resealed += result.affected ?? 0;
    }
    return out;
  }

  list(): Promise<WebhookSubscription[]> {
    return this.subscriptions.find({ order: { createdAt: 'DESC', id: 'DESC' } });
  }

  get(id: string): Promise<WebhookSubscription | null> {
    if (!isUuid(id)) return Promise.resolve(null);
    return this.subscriptions.findOneBy({ id });
  }

  /** Deletes the subscription and its deliveries (queued jobs find no row and end); false when unknown. */
  async delete(id: string): Promise<boolean> {
    if (!isUuid(id)) return false;
    const result = await this.subscriptions.delete({ id });
    return (result.affected ?? 0) > 0;
  }

  /** A subscription's deliveries, newest first. */
  async listDeliveries(subscriptionId: string, page: { limit: number; cursor?: string }): Promise<DeliveryPage> {
    const qb = this.deliveries
      .createQueryBuilder('d')
      .where('d.subscriptionId = :subscriptionId', { subscriptionId })
      .orderBy('d.createdAt', 'DESC')
      .addOrderBy('d.id', 'DESC')
      .take(page.limit + 1);
    if (page.cursor !== undefined) {
      const after = parseDeliveryKey(decodeCursor(page.cursor, isDeliveryKey));
      qb.andWhere('(d.createdAt, d.id) < (:at, :id)', { at: after.createdAt, id: after.id });
    }
    const rows = await qb.getMany();
    const items = rows.slice(0, page.limit);
    return { items, nextCursor: rows.length > page.limit ? encodeCursor(deliveryKey(items[items.length - 1]!)) : null };
  }

  /** A delivery with its subscription, or null when either is gone. */
  async findDelivery(id: string): Promise<(WebhookDelivery & { subscription: WebhookSubscription }) | null> {
    if (!isUuid(id)) return null;
    const row = await this.deliveries.findOne({ where: { id }, relations: { subscription: true } });
    return row?.subscription ? (row as WebhookDelivery & { subscription: WebhookSubscription }) : null;
  }

  /** Appends an attempt to the row; `status` is where the delivery stands after it. */
  async recordAttempt(id: string, attempt: WebhookAttempt, status: WebhookDeliveryStatus): Promise<void> {
    await this.deliveries
      .createQueryBuilder()
      .update()
      .set({
        attempts: () => 'attempts + 1',
        attemptLog: () => `attempt_log || jsonb_build_array(:attempt::jsonb)`,
        status,
        ...(status === 'succeeded' ? { deliveredAt: () => 'now()' } : {}),
      })
      .where('id = :id', { id })
      .setParameters({ attempt: JSON.stringify(attempt) })
      .execute();
  }

  /** Marks a delivery failed for good (its job has no attempts left); true when it was still pending. */
  async markFailed(id: string): Promise<boolean> {
    const result = await this.deliveries.update({ id, status: 'pending' }, { status: 'failed' });
    return (result.affected ?? 0) > 0;
  }

  /**
   * BullMQ failed the delivery's job for stalling (the workers holding it died): the attempt log
   * records it and the delivery stays pending for its job to run again, up to `limit` stalls over
   * its life. True when it may run again; false when the limit is reached or the row is no longer
   * pending. The deliveries' counterpart of the operation ledger's settleQueueFailure.
   */
  async requeueStalled(id: string, error: string, limit: number): Promise<boolean> {
    const attempt: WebhookAttempt = { at: new Date().toISOString(), status: null, durationMs: 0, error: `${STALLED_ATTEMPT}: ${error}` };
    const result = await this.deliveries
      .createQueryBuilder()
      .update()
      .set({ attemptLog: () => `attempt_log || jsonb_build_array(:attempt::jsonb)` })
      .where(`id = :id AND status = 'pending'`, { id })
      .andWhere(`(SELECT count(*) FROM jsonb_array_elements(attempt_log) e WHERE e->>'error' LIKE :stalled) < :limit`, {
        stalled: `${STALLED_ATTEMPT}%`,
        limit,
      })
      .setParameters({ attempt: JSON.stringify(attempt) })
      .execute();
    return (result.affected ?? 0) > 0;
  }

  /** Pending deliveries the relay has not handed to the queue yet, oldest first. */
  /** Whether any subscription exists (no subscription, no delivery can be written). */
  async hasSubscriptions(): Promise<boolean> {
    const rows: Array<{ any: boolean }> = await this.subscriptions.query(
      `SELECT EXISTS (SELECT 1 FROM ${this.subscriptions.metadata.tablePath.split('.').map((p) => `"${p}"`).join('.')}) AS "any"`,
    );
    return rows[0]?.any === true;
  }

  unqueued(limit: number): Promise<WebhookDelivery[]> {
    return this.deliveries
      .createQueryBuilder('d')
      .where(`d.status = 'pending' AND d.queuedAt IS NULL`)
      .orderBy('d.createdAt', 'ASC')
      .take(limit)
      .getMany();
  }

  async markQueued(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.deliveries
      .createQueryBuilder()
      .update()
      .set({ queuedAt: () => 'now()' })
      .where('id IN (:...ids) AND queued_at IS NULL', { ids: [...ids] })
      .execute();
  }

  /** Pending deliveries already handed to the queue at least `olderThanMs` ago (to check Redis still has them). */
  queuedPending(olderThanMs: number, limit: number): Promise<WebhookDelivery[]> {
    return this.deliveries
      .createQueryBuilder('d')
      .where(`d.status = 'pending' AND d.queuedAt < now() - make_interval(secs => :secs)`, { secs: olderThanMs / 1000 })
      .orderBy('d.queuedAt', 'ASC')
      .take(limit)
      .getMany();
  }
}
