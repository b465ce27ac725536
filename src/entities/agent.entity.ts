import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn, UpdateDateColumn } from 'typeorm';

export const AGENT_STATUSES = ['draft', 'provisioning', 'active', 'paused', 'hibernated', 'error', 'destroyed'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];

// The name becomes the prefix of the server name and the tailnet hostname, and DNS labels stop at 63 characters.
export const AGENT_NAME_MAX_LENGTH = 63;

@Entity({ name: 'agents' })
export class Agent {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_agents' })
  id!: string;

  @Column({ type: 'varchar', length: AGENT_NAME_MAX_LENGTH, name: 'name' })
  name!: string;

  @Column({ type: 'enum', enum: AGENT_STATUSES, enumName: 'agent_status', name: 'status', default: 'draft' })
  status!: AgentStatus;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
