import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn, UpdateDateColumn } from 'typeorm';
import type { AgentSpec } from './agent.entity';

/** How a pool keeps its standbys: powered on, powered off (a start away), or hibernated (a wake away). */
export const STANDBY_MODES = ['running', 'stopped', 'hibernated'] as const;
export type StandbyMode = (typeof STANDBY_MODES)[number];

/** A member of a pool waits as a `standby` until a claim hands it over (`claimed`), after which it is the claimer's. */
export const POOL_ROLES = ['standby', 'claimed'] as const;
export type PoolRole = (typeof POOL_ROLES)[number];

/** From its cron time (in its time zone) on, the pool keeps `minReady` standbys, until another schedule's time. */
export interface PoolSchedule {
  cron: string;
  timezone: string;
  minReady: number;
}

/** The agent a pool's standbys are made as: an agent's spec, with the labels its servers carry while they wait. */
export interface PoolSpec extends AgentSpec {
  labels: Record<string, string>;
}

export const POOL_NAME_MAX_LENGTH = 40;

@Entity({ name: 'pools' })
@Index('uq_pools_name', ['name'], { unique: true })
export class Pool {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_pools' })
  id!: string;

  @Column({ type: 'varchar', length: POOL_NAME_MAX_LENGTH, name: 'name' })
  name!: string;

  @Column({ type: 'jsonb', name: 'spec' })
  spec!: PoolSpec;

  @Column({ type: 'integer', name: 'min_ready' })
  minReady!: number;

  @Column({ type: 'enum', enum: STANDBY_MODES, enumName: 'pool_standby_mode', name: 'standby' })
  standby!: StandbyMode;

  /** The most standbys it keeps at once (a schedule asking for more gets this many); null: no limit. */
  @Column({ type: 'integer', name: 'max_size', nullable: true })
  maxSize!: number | null;

  @Column({ type: 'jsonb', name: 'schedules', default: () => "'[]'" })
  schedules!: PoolSchedule[];

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
