import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { ACTOR_MAX_LENGTH, SYSTEM_ACTOR } from './actor';
import { Agent } from './agent.entity';

export const LEASE_HOLDER_MAX_LENGTH = 200;

/**
 * A promise that someone is using an agent until `expiresAt`: while a lease is live (not released,
 * not expired) the policies never stop, hibernate, destroy or expire the agent, and a pool never
 * hands it to a claim (see LIVE_LEASE_SQL in src/policy/leases.ts).
 */
@Entity({ name: 'agent_leases' })
@Index('idx_agent_leases_agent', ['agentId', 'expiresAt'])
export class AgentLease {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_agent_leases' })
  id!: string;

  @Column({ type: 'uuid', name: 'agent_id' })
  agentId!: string;

  @ManyToOne(() => Agent, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'agent_id', foreignKeyConstraintName: 'fk_agent_leases_agent' })
  agent?: Agent;

  /** Who holds it, in the client's words (a CI job, a user). */
  @Column({ type: 'varchar', length: LEASE_HOLDER_MAX_LENGTH, name: 'holder' })
  holder!: string;

  @Column({ type: 'timestamptz', name: 'expires_at' })
  expiresAt!: Date;

  @Column({ type: 'timestamptz', name: 'released_at', nullable: true })
  releasedAt!: Date | null;

  @Column({ type: 'varchar', length: ACTOR_MAX_LENGTH, name: 'created_by', default: SYSTEM_ACTOR })
  createdBy!: string;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;
}
