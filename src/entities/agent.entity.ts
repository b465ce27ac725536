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
  /**
   * Where the server may go, in order of preference (the first is `location`/`serverType`); absent
   * on agents that name a single place.
   */
  placements?: { location: string; serverType: string }[];
  /** False: the server has no primary IPv4 (IPv6 only); absent = the fleet's HETZNER_PUBLIC_IPV4. */
  publicIpv4?: boolean;
  /** The idle ladder (src/policy): what to do after how long without activity; absent = never. */
  idle?: IdleStep[];
  /** false: no activity reporter is installed on the machine (default true, when TAILFLEET_PUBLIC_URL is set). */
  reporter?: boolean;
}

export const IDLE_ACTIONS = ['stop', 'hibernate', 'destroy'] as const;
export type IdleAction = (typeof IDLE_ACTIONS)[number];

/** One rung of an idle ladder: after this long without activity, this action. */
export interface IdleStep {
  afterSeconds: number;
  action: IdleAction;
}

/** What last counted as activity of an agent (see src/policy). */
export const ACTIVITY_KINDS = ['heartbeat-busy', 'session', 'lease', 'command'] as const;
export type ActivityKind = (typeof ACTIVITY_KINDS)[number];

export const BOOTSTRAP_STATUSES = ['done', 'error'] as const;
export type BootstrapStatus = (typeof BOOTSTRAP_STATUSES)[number];

/** The last heartbeat's figures, as the agent's reporter sent them. */
export interface HeartbeatFigures {
  busy: boolean | null;
  sessions: number;
  load: number | null;
}

// Names are unique among agents that are not destroyed; the listing filters use the other indexes.
export const LIVE_AGENT_PREDICATE = `"status" <> 'destroyed'`;

@Entity({ name: 'agents' })
@Index('uq_agents_live_name', ['name'], { unique: true, where: LIVE_AGENT_PREDICATE })
@Index('idx_agents_created', ['createdAt', 'id'])
@Index('idx_agents_status_created', ['status', 'createdAt', 'id'])
@Index('idx_agents_name_created', ['name', 'createdAt', 'id'])
@Index('idx_agents_expires', ['expiresAt'], { where: `"expires_at" IS NOT NULL AND "status" <> 'destroyed'` })
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

  /** When the expiry policy destroys the agent (a lease still live holds it off); null = no expiry of its own. */
  @Column({ type: 'timestamptz', name: 'expires_at', nullable: true })
  expiresAt!: Date | null;

  /** The expiry an `agent.expiring` warning was written for: once per expiry, again after an extend. */
  @Column({ type: 'timestamptz', name: 'expiry_warned_for', nullable: true })
  expiryWarnedFor!: Date | null;

  /** The last activity the agent reported (a busy heartbeat or a session); leases and commands are read from their rows. */
  @Column({ type: 'timestamptz', name: 'last_activity_at', nullable: true })
  lastActivityAt!: Date | null;

  @Column({ type: 'varchar', length: 16, name: 'last_activity_kind', nullable: true })
  lastActivityKind!: ActivityKind | null;

  @Column({ type: 'timestamptz', name: 'last_heartbeat_at', nullable: true })
  lastHeartbeatAt!: Date | null;

  @Column({ type: 'jsonb', name: 'heartbeat', nullable: true })
  heartbeat!: HeartbeatFigures | null;

  /** What the machine's own cloud-init ended with, as its reporter said; null until it did. */
  @Column({ type: 'varchar', length: 8, name: 'bootstrap_status', nullable: true })
  bootstrapStatus!: BootstrapStatus | null;

  @Column({ type: 'text', name: 'bootstrap_detail', nullable: true })
  bootstrapDetail!: string | null;

  @Column({ type: 'timestamptz', name: 'bootstrap_at', nullable: true })
  bootstrapAt!: Date | null;
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
