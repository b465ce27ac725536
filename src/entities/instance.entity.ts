import {
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
import { TRANSITIONAL_INSTANCE_STATUSES } from '../operations/types';

/**
 * Settled statuses here; the transitional ones (stopping, rebooting, …) are declared beside the
 * operation descriptors that pass through them (src/operations/types).
 */
export const INSTANCE_STATUSES = [
  'pending',
  'running',
  'stopped',
  // Hibernation: the server is snapshotted and deleted; waking creates a new one from the snapshot.
  'hibernated',
  'destroyed',
  'failed',
  ...TRANSITIONAL_INSTANCE_STATUSES,
] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

// An instance in one of these states owns (or may own) a server and a tailnet device.
export const TERMINAL_INSTANCE_STATUSES = ['destroyed', 'failed'] as const satisfies readonly InstanceStatus[];
export const LIVE_INSTANCE_STATUSES = INSTANCE_STATUSES.filter(
  (s): s is Exclude<InstanceStatus, 'destroyed' | 'failed'> => s !== 'destroyed' && s !== 'failed',
);

// Keep in sync with TERMINAL_INSTANCE_STATUSES; the drift test compares the predicate with the database.
export const LIVE_INSTANCE_PREDICATE = `"status" NOT IN ('destroyed', 'failed')`;

/** A create the cloud refused: where, in which project, and its answer. */
export interface PlacementRefusal {
  project: string;
  location: string;
  serverType: string;
  /** Hetzner's error code: resource_unavailable, placement_error, resource_limit_exceeded, invalid_input, … */
  code: string;
  status: number;
  message: string;
  at: string;
}

@Entity({ name: 'instances' })
@Index('uq_instances_live_agent', ['agentId'], { unique: true, where: LIVE_INSTANCE_PREDICATE })
@Index('idx_instances_agent_created', ['agentId', 'createdAt'])
@Index('idx_instances_server_id', ['serverId'])
export class Instance {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_instances' })
  id!: string;

  @Column({ type: 'uuid', name: 'agent_id' })
  agentId!: string;

  @ManyToOne(() => Agent, { nullable: false, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'agent_id', foreignKeyConstraintName: 'fk_instances_agent' })
  agent?: Agent;

  // Hetzner ids are int64; pg hands bigint back as a string so no id is ever rounded.
  @Column({ type: 'bigint', name: 'server_id', nullable: true })
  serverId!: string | null;

  @Column({ type: 'varchar', length: 63, name: 'server_name', nullable: true })
  serverName!: string | null;

  @Column({ type: 'inet', name: 'server_ip', nullable: true })
  serverIp!: string | null;

  @Column({ type: 'varchar', length: 64, name: 'tailscale_device_id', nullable: true })
  tailscaleDeviceId!: string | null;

  @Column({ type: 'inet', name: 'tailscale_ip', nullable: true })
  tailscaleIp!: string | null;

  @Column({ type: 'varchar', length: 63, name: 'tailscale_hostname', nullable: true })
  tailscaleHostname!: string | null;

  @Column({ type: 'varchar', length: 32, name: 'location', nullable: true })
  location!: string | null;

  // The Hetzner project (HETZNER_PROJECTS name) the server and its snapshots live in; chosen before
  // the first create and kept, so every later call for the instance goes to that project's API.
  @Column({ type: 'varchar', length: 32, name: 'hetzner_project', nullable: true })
  hetznerProject!: string | null;

  // The places the cloud refused before the server landed where it is, oldest first.
  @Column({ type: 'jsonb', name: 'placement_refusals', default: () => "'[]'" })
  placementRefusals!: PlacementRefusal[];

  // The snapshot a hibernated instance lives in (Hetzner image id, int64 as a string), and its billed size.
  @Column({ type: 'bigint', name: 'snapshot_image_id', nullable: true })
  snapshotImageId!: string | null;

  @Column({ type: 'double precision', name: 'snapshot_size_gb', nullable: true })
  snapshotSizeGb!: number | null;

  @Column({ type: 'varchar', length: 32, name: 'server_type' })
  serverType!: string;

  @Column({ type: 'varchar', length: 128, name: 'image' })
  image!: string;

  @Column({ type: 'enum', enum: INSTANCE_STATUSES, enumName: 'instance_status', name: 'status', default: 'pending' })
  status!: InstanceStatus;

  @Column({ type: 'text', name: 'error', nullable: true })
  error!: string | null;

  @Column({ type: 'timestamptz', name: 'started_at', nullable: true })
  startedAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'stopped_at', nullable: true })
  stoppedAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'destroyed_at', nullable: true })
  destroyedAt!: Date | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
