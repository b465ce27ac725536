import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn, UpdateDateColumn } from 'typeorm';

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
}

// Names are unique among agents that are not destroyed; the listing filters use the other indexes.
export const LIVE_AGENT_PREDICATE = `"status" <> 'destroyed'`;

@Entity({ name: 'agents' })
@Index('uq_agents_live_name', ['name'], { unique: true, where: LIVE_AGENT_PREDICATE })
@Index('idx_agents_created', ['createdAt', 'id'])
@Index('idx_agents_status_created', ['status', 'createdAt', 'id'])
@Index('idx_agents_name_created', ['name', 'createdAt', 'id'])
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

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
