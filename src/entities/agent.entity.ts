import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn, UpdateDateColumn } from 'typeorm';
import { Pool, POOL_ROLES, type PoolRole } from './pool.entity';

export const AGENT_STATUSES = ['draft', 'provisioning', 'active', 'paused', 'hibernated', 'error', 'destroyed'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];

// The name becomes the prefix of the server name and the tailnet hostname, and DNS labels stop at 63 characters.
export const AGENT_NAME_MAX_LENGTH = 63;

/**
 * What the application asked for, with the environment's defaults filled in when the agent was
 * created: every instance of the agent (provision, reprovision, wake) is made from it.
 */
export interface AgentSpec {
  serverType: string;
  location: string;
  /** An image name or a snapshot id. */
  image: string;
  sshKeys: string[];
  /** The application's own cloud-init (merged with the tailnet join at provision); never an auth key. */
  userData: string | null;
}

// Names are unique among agents that are not destroyed; the listing filters use the other indexes.
export const LIVE_AGENT_PREDICATE = `"status" <> 'destroyed'`;

@Entity({ name: 'agents' })
@Index('uq_agents_live_name', ['name'], { unique: true, where: LIVE_AGENT_PREDICATE })
@Index('idx_agents_created', ['createdAt', 'id'])
@Index('idx_agents_status_created', ['status', 'createdAt', 'id'])
@Index('idx_agents_name_created', ['name', 'createdAt', 'id'])
// The pool policy and a claim read a pool's members by role.
@Index('idx_agents_pool_role', ['poolId', 'poolRole'])
// GIN (jsonb_path_ops) for `labels @> {...}`: written by hand in the migration, which TypeORM cannot express.
@Index('idx_agents_labels', { synchronize: false })
export class Agent {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_agents' })
  id!: string;

  @Column({ type: 'varchar', length: AGENT_NAME_MAX_LENGTH, name: 'name' })
  name!: string;

  @Column({ type: 'enum', enum: AGENT_STATUSES, enumName: 'agent_status', name: 'status', default: 'draft' })
  status!: AgentStatus;

  /** The application's own labels (Hetzner's label rules), also written onto the agent's servers. */
  @Column({ type: 'jsonb', name: 'labels', default: {} })
  labels!: Record<string, string>;

  /** Null for agents created before specs were stored: their instance columns and the environment tell. */
  @Column({ type: 'jsonb', name: 'spec', nullable: true })
  spec!: AgentSpec | null;

  /** The pool the agent was made for (null: an agent of its own, or its pool was deleted). */
  @Column({ type: 'uuid', name: 'pool_id', nullable: true })
  poolId!: string | null;

  @ManyToOne(() => Pool, { nullable: true, onDelete: 'SET NULL' })
  @JoinColumn({ name: 'pool_id', foreignKeyConstraintName: 'fk_agents_pool' })
  pool?: Pool | null;

  /** `standby` while it waits in its pool, `claimed` once handed over; null for agents made outside pools. */
  @Column({ type: 'enum', enum: POOL_ROLES, enumName: 'agent_pool_role', name: 'pool_role', nullable: true })
  poolRole!: PoolRole | null;

  @Column({ type: 'timestamptz', name: 'claimed_at', nullable: true })
  claimedAt!: Date | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
