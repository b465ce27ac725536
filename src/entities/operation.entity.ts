import {
  Check,
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryGeneratedColumn,
  UpdateDateColumn,
} from 'typeorm';
import { Agent } from './agent.entity';
import { ACTOR_MAX_LENGTH, SYSTEM_ACTOR } from './actor';
import { ProvisioningJob } from './provisioning-job.entity';
import { OPERATION_TYPE_NAMES, type OperationType } from '../operations/types';

// The operation types are the registry's: each has its descriptor (src/operations/types).
export const OPERATION_TYPES = OPERATION_TYPE_NAMES;
export type { OperationType };

export const OPERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type OperationStatus = (typeof OPERATION_STATUSES)[number];

// One row per accepted API request: the API answers from here, so Redis job retention never loses history.
@Entity({ name: 'operations' })
// A plain unique index is enough: PostgreSQL treats NULL keys as distinct, and ON CONFLICT can target it.
@Index('uq_operations_idempotency_key', ['idempotencyKey'], { unique: true })
@Index('idx_operations_agent_requested', ['agentId', 'requestedAt'])
@Index('idx_operations_provisioning_job', ['provisioningJobId'])
// The relay's look-up of accepted work that may need (re)delivery; small, because finished rows leave it.
@Index('idx_operations_pending', ['requestedAt'], { where: `"status" IN ('queued', 'running')` })
// An agent's operations under way (a command's checks, pool claims): as small as the one above.
@Index('idx_operations_agent_active', ['agentId'], { where: `"status" IN ('queued', 'running')` })
// GET /v1/operations pages newest first by (requested_at, id); a B-tree index serves the descending
// order by scanning backwards, so these need no DESC of their own.
@Index('idx_operations_requested', ['requestedAt', 'id'])
@Index('idx_operations_status_requested', ['status', 'requestedAt', 'id'])
@Check('ck_operations_progress', '"progress" BETWEEN 0 AND 100')
@Check('ck_operations_attempts', '"attempts" >= 0')
export class Operation {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_operations' })
  id!: string;

  @Column({ type: 'enum', enum: OPERATION_TYPES, enumName: 'operation_type', name: 'type' })
  type!: OperationType;

  @Column({ type: 'uuid', name: 'agent_id', nullable: true })
  agentId!: string | null;

  @ManyToOne(() => Agent, { nullable: true, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'agent_id', foreignKeyConstraintName: 'fk_operations_agent' })
  agent?: Agent | null;

  @Column({ type: 'uuid', name: 'provisioning_job_id', nullable: true })
  provisioningJobId!: string | null;

  @ManyToOne(() => ProvisioningJob, { nullable: true, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'provisioning_job_id', foreignKeyConstraintName: 'fk_operations_provisioning_job' })
  provisioningJob?: ProvisioningJob | null;

  @Column({ type: 'enum', enum: OPERATION_STATUSES, enumName: 'operation_status', name: 'status', default: 'queued' })
  status!: OperationStatus;

  // The key's slot, unique: `client:<token id or bootstrap>:<Idempotency-Key>` for a client's key (so
  // one token's key is never another's), `rollback:<provisioning job>` for tailfleet's own. A client's
  // key holds its slot for 24 hours (IDEMPOTENCY_KEY_TTL_MS); reused after that, the slot is released
  // from this row (set to NULL) and taken by the new request.
  @Column({ type: 'varchar', length: 255, name: 'idempotency_key', nullable: true })
  idempotencyKey!: string | null;

  // Method and route template the client's key was sent to (`POST /v1/agents/:id/stop`); the same key
  // on another route is another request (422), even for the same type of operation.
  @Column({ type: 'varchar', length: 100, name: 'idempotency_route', nullable: true })
  idempotencyRoute!: string | null;

  // What the operation was asked to do beyond its type, as its descriptor's args schema declares it
  // (src/operations/types); checked when the operation is accepted and again when it is claimed.
  @Column({ type: 'jsonb', name: 'args', default: () => "'{}'" })
  args!: Record<string, unknown>;

  @Column({ type: 'varchar', length: 255, name: 'queue_job_id', nullable: true })
  queueJobId!: string | null;

  @Column({ type: 'integer', name: 'attempts', default: 0 })
  attempts!: number;

  @Column({ type: 'integer', name: 'progress', default: 0 })
  progress!: number;

  // Name of the step in progress, so the API can say where a long provision is.
  @Column({ type: 'varchar', length: 64, name: 'current_step', nullable: true })
  currentStep!: string | null;

  @Column({ type: 'text', name: 'error', nullable: true })
  error!: string | null;

  @Column({ type: 'varchar', length: 64, name: 'failed_step', nullable: true })
  failedStep!: string | null;

  // Who asked: `token:<name>#<id>` or `bootstrap`, or `system` for the reconciler, the rollback listener and the sweep.
  @Column({ type: 'varchar', length: ACTOR_MAX_LENGTH, name: 'requested_by', default: SYSTEM_ACTOR })
  requestedBy!: string;

  /** Why tailfleet asked for it itself (a policy: "idle 30 min since …", "expired"); null for requests. */
  @Column({ type: 'text', name: 'reason', nullable: true })
  reason!: string | null;

  // The delivery (BullMQ lock token) that claimed the operation last. Only that delivery may fail or
  // retry it, so a duplicate delivery that lost the race never records a failure (nor triggers a
  // rollback) for work another delivery is finishing.
  @Column({ type: 'varchar', length: 64, name: 'claim_token', nullable: true })
  claimToken!: string | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'requested_at' })
  requestedAt!: Date;

  @Column({ type: 'timestamptz', name: 'started_at', nullable: true })
  startedAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt!: Date | null;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
