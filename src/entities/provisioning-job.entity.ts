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
   * Ids of the Tailscale auth keys made for this job's attempts (ids only: a key itself is a secret
   * and is never stored). Attempts whose create failed leave valid keys behind; once the job has
   * ended (provisioned or rolled back) they are revoked. Not earlier: a parallel delivery of the
   * same job may still be booting a server that needs its key.
   */
  @Column({ type: 'varchar', length: 64, array: true, name: 'auth_key_ids', default: () => "'{}'" })
  authKeyIds!: string[];

  @Column({ type: 'timestamptz', name: 'started_at', nullable: true })
  startedAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'finished_at', nullable: true })
  finishedAt!: Date | null;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' })
  updatedAt!: Date;
}
