import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';
import { ACTOR_MAX_LENGTH } from './actor';

export const OWNED_RESOURCE_TYPES = ['server', 'device', 'auth_key', 'image'] as const;
export type OwnedResourceType = (typeof OWNED_RESOURCE_TYPES)[number];

/**
 * A destructive call the ownership guard refused (src/fleet/ownership-guard.ts): the resource was
 * left in place because the evidence that it is this fleet's did not agree. Open until the
 * reconciler sees the resource gone or owned by a live instance, or an operator resolves it
 * (POST /v1/findings/:id/resolve); listed in every reconcile report meanwhile. The event written with it (to_status `needs_attention`) keeps the lasting history.
 */
@Entity({ name: 'ownership_findings' })
@Index('idx_ownership_findings_open', ['resolvedAt', 'createdAt'])
export class OwnershipFinding {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_ownership_findings' })
  id!: string;

  @Column({ type: 'varchar', length: 16, name: 'resource_type' })
  resourceType!: OwnedResourceType;

  @Column({ type: 'varchar', length: 64, name: 'resource_id' })
  resourceId!: string;

  @Column({ type: 'varchar', length: 255, name: 'resource_name', nullable: true })
  resourceName!: string | null;

  /** What was refused: `delete`, `power_off`, `revoke`. */
  @Column({ type: 'varchar', length: 16, name: 'action' })
  action!: string;

  /** The workflow that asked: destroy, rollback, provision, stop, reconcile, … */
  @Column({ type: 'varchar', length: 32, name: 'operation' })
  operation!: string;

  // No foreign keys: a finding may name an agent or operation id found on a label, not in this database.
  @Column({ type: 'uuid', name: 'operation_id', nullable: true })
  operationId!: string | null;

  @Column({ type: 'uuid', name: 'agent_id', nullable: true })
  agentId!: string | null;

  @Column({ type: 'uuid', name: 'instance_id', nullable: true })
  instanceId!: string | null;

  @Column({ type: 'jsonb', name: 'matched' })
  matched!: string[];

  @Column({ type: 'jsonb', name: 'missing' })
  missing!: string[];

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @Column({ type: 'timestamptz', name: 'resolved_at', nullable: true })
  resolvedAt!: Date | null;

  /** Why it was closed: what the reconciler saw, or the operator's note. */
  @Column({ type: 'text', name: 'resolution', nullable: true })
  resolution!: string | null;

  /** Who closed it: `system` for the reconciler, else the token (see actorName). */
  @Column({ type: 'varchar', length: ACTOR_MAX_LENGTH, name: 'resolved_by', nullable: true })
  resolvedBy!: string | null;
}
