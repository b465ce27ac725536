import { Column, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { ACTOR_MAX_LENGTH, SYSTEM_ACTOR } from './actor';
import { Agent } from './agent.entity';
import { Operation } from './operation.entity';

export const EVENT_ENTITY_TYPES = ['agent', 'instance', 'provisioning_job', 'operation'] as const;
export type EventEntityType = (typeof EVENT_ENTITY_TYPES)[number];
/**
 * What an event may be about: the four rows moved by transitions (src/db/transitions.ts), and an
 * ownership finding an operator resolved (open → resolved, written by OwnershipFindingRepository).
 */
export const EVENT_SUBJECT_TYPES = [...EVENT_ENTITY_TYPES, 'finding'] as const;
export type EventSubjectType = (typeof EVENT_SUBJECT_TYPES)[number];

// Append-only audit of status changes. entity_id points into one of five tables, so it has no foreign key.
@Entity({ name: 'events' })
@Index('idx_events_agent_at', ['agentId', 'at'])
@Index('idx_events_entity', ['entityType', 'entityId'])
export class Event {
  // bigint comes back from pg as a string.
  @PrimaryGeneratedColumn('identity', { type: 'bigint', generatedIdentity: 'ALWAYS', primaryKeyConstraintName: 'pk_events' })
  id!: string;

  @Column({ type: 'enum', enum: EVENT_SUBJECT_TYPES, enumName: 'event_entity_type', name: 'entity_type' })
  entityType!: EventSubjectType;

  @Column({ type: 'uuid', name: 'entity_id' })
  entityId!: string;

  @Column({ type: 'uuid', name: 'agent_id', nullable: true })
  agentId!: string | null;

  @ManyToOne(() => Agent, { nullable: true, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'agent_id', foreignKeyConstraintName: 'fk_events_agent' })
  agent?: Agent | null;

  // NULL when the row was created in this status.
  @Column({ type: 'varchar', length: 32, name: 'from_status', nullable: true })
  fromStatus!: string | null;

  @Column({ type: 'varchar', length: 32, name: 'to_status' })
  toStatus!: string;

  @Column({ type: 'text', name: 'reason' })
  reason!: string;

  @Column({ type: 'uuid', name: 'operation_id', nullable: true })
  operationId!: string | null;

  @ManyToOne(() => Operation, { nullable: true, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'operation_id', foreignKeyConstraintName: 'fk_events_operation' })
  operation?: Operation | null;

  // Who caused it: `token:<name>#<id>` or `bootstrap` for requests, `system` for workers, reconciler and sweeps.
  @Column({ type: 'varchar', length: ACTOR_MAX_LENGTH, name: 'actor', default: SYSTEM_ACTOR })
  actor!: string;

  // clock_timestamp(), not now(): a transaction that waited for a row lock logs the time it really
  // wrote, so ordering by `at` follows the order in which transitions happened.
  @Column({ type: 'timestamptz', name: 'at', default: () => 'clock_timestamp()' })
  at!: Date;
}
