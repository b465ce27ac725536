import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { ACTOR_MAX_LENGTH, SYSTEM_ACTOR } from './actor';

/** What a subscription can ask for; the trigger on `events` (see the webhooks migration) writes them. */
export const WEBHOOK_EVENT_TYPES = ['operation.succeeded', 'operation.failed', 'operation.cancelled', 'agent.status_changed', 'agent.expiring', 'finding.resolved'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/**
 * A receiver of webhooks. Signing needs the secret itself (a hash would not do), so it is kept
 * encrypted with WEBHOOK_SECRET_KEY (src/webhooks/secret-box.ts). It is shown once, in the answer that
 * creates the subscription, and never again.
 */
@Entity({ name: 'webhook_subscriptions' })
export class WebhookSubscription {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_webhook_subscriptions' })
  id!: string;

  @Column({ type: 'text', name: 'url' })
  url!: string;

  @Column({ type: 'text', array: true, name: 'events' })
  events!: WebhookEventType[];

  // The stored form: `enc:v1:<key id>:<sealed>` of `whsec_` + base64 of 32 random bytes (or that
  // plain value while no key is configured).
  @Column({ type: 'text', name: 'secret' })
  secret!: string;

  @Column({ type: 'varchar', length: ACTOR_MAX_LENGTH, name: 'created_by', default: SYSTEM_ACTOR })
  createdBy!: string;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;
}

export const WEBHOOK_DELIVERY_STATUSES = ['pending', 'succeeded', 'failed'] as const;
export type WebhookDeliveryStatus = (typeof WEBHOOK_DELIVERY_STATUSES)[number];

/** One attempt at a delivery, as recorded on its row. */
export interface WebhookAttempt {
  at: string;
  /** The receiver's HTTP status; null when none came (timeout, refused connection, refused address). */
  status: number | null;
  durationMs: number;
  error: string | null;
}

/**
 * One event for one subscription: the outbox row. The trigger on `events` writes it in the same
 * transaction as the event (so a committed transition always has its deliveries), the webhook relay
 * hands pending rows to the `webhooks` queue (job id = row id), and the delivery processor records
 * every attempt here. Its id is the `webhook-id` the receiver sees, the same on every retry.
 */
@Entity({ name: 'webhook_deliveries' })
@Index('idx_webhook_deliveries_subscription', ['subscriptionId', 'createdAt'])
@Index('idx_webhook_deliveries_unqueued', ['createdAt'], { where: `"status" = 'pending' AND "queued_at" IS NULL` })
export class WebhookDelivery {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_webhook_deliveries' })
  id!: string;

  @Column({ type: 'uuid', name: 'subscription_id' })
  subscriptionId!: string;

  @ManyToOne(() => WebhookSubscription, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'subscription_id', foreignKeyConstraintName: 'fk_webhook_deliveries_subscription' })
  subscription?: WebhookSubscription;

  // The events row that caused it (bigint: a string in JS).
  @Column({ type: 'bigint', name: 'event_id' })
  eventId!: string;

  @Column({ type: 'varchar', length: 64, name: 'type' })
  type!: WebhookEventType;

  // The body's `data`; `timestamp` is `occurredAt`.
  @Column({ type: 'jsonb', name: 'data' })
  data!: Record<string, unknown>;

  @Column({ type: 'timestamptz', name: 'occurred_at' })
  occurredAt!: Date;

  @Column({ type: 'enum', enum: WEBHOOK_DELIVERY_STATUSES, enumName: 'webhook_delivery_status', name: 'status', default: 'pending' })
  status!: WebhookDeliveryStatus;

  @Column({ type: 'int', name: 'attempts', default: 0 })
  attempts!: number;

  @Column({ type: 'jsonb', name: 'attempt_log', default: () => "'[]'" })
  attemptLog!: WebhookAttempt[];

  // Set by the relay once the job is in the queue.
  @Column({ type: 'timestamptz', name: 'queued_at', nullable: true })
  queuedAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'delivered_at', nullable: true })
  deliveredAt!: Date | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;
}
