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
import { Instance } from './instance.entity';

export const PROVISIONING_JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'rolled_back'] as const;
export type ProvisioningJobStatus = (typeof PROVISIONING_JOB_STATUSES)[number];

@Entity({ name: 'provisioning_jobs' })
@Index('idx_provisioning_jobs_agent', ['agentId'])
@Index('idx_provisioning_jobs_instance', ['instanceId'])
export class ProvisioningJob {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_provisioning_jobs' })
  id!: string;

  @Column({ type: 'uuid', name: 'agent_id' })
  agentId!: string;

  @ManyToOne(() => Agent, { nullable: false, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'agent_id', foreignKeyConstraintName: 'fk_provisioning_jobs_agent' })
  agent?: Agent;

  @Column({ type: 'uuid', name: 'instance_id' })
  instanceId!: string;

  @ManyToOne(() => Instance, { nullable: false, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'instance_id', foreignKeyConstraintName: 'fk_provisioning_jobs_instance' })
  instance?: Instance;

  @Column({
    type: 'enum',
    enum: PROVISIONING_JOB_STATUSES,
    enumName: 'provisioning_job_status',
    name: 'status',
    default: 'queued',
  })
  status!: ProvisioningJobStatus;

  @Column({ type: 'integer', name: 'attempts', default: 0 })
  attempts!: number;

  @Column({ type: 'text', name: 'error', nullable: true })
  error!: string | null;

  @Column({ type: 'varchar', length: 64, name: 'failed_step', nullable: true })
  failedStep!: string | null;

  /**
   * Id of the newest Tailscale auth key made for this job (the id only: the key itself is a secret
   * and is never stored). A retry that finds no server, and a rollback, delete it, so keys made by
   * attempts that never created a server do not stay valid until they expire.
   */
  @Column({ type: 'varchar', length: 64, name: 'auth_key_id', nullable: true })
  authKeyId!: string | null;

  @Column({ type: 'timestamptz', name: 'started_at', nullable: true })
  startedAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt!: Date | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
