import { Column, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

export const RECONCILE_TRIGGERS = ['schedule', 'manual'] as const;
export type ReconcileTrigger = (typeof RECONCILE_TRIGGERS)[number];

/**
 * One row per finished reconcile pass. Kept in PostgreSQL rather than process memory so every API
 * process answers GET /v1/reconcile with the same report, whichever worker ran the pass. Only the
 * newest rows are kept (the reconciler prunes); events and operations hold the lasting history.
 */
@Entity({ name: 'reconcile_reports' })
@Index('idx_reconcile_reports_finished', ['finishedAt'])
export class ReconcileReportRecord {
  @PrimaryGeneratedColumn('identity', {
    type: 'bigint',
    generatedIdentity: 'ALWAYS',
    primaryKeyConstraintName: 'pk_reconcile_reports',
  })
  id!: string;

  @Column({ type: 'varchar', length: 16, name: 'trigger' })
  trigger!: ReconcileTrigger;

  // The reconcile Operation a manual pass ran for; scheduled passes have none.
  @Column({ type: 'uuid', name: 'operation_id', nullable: true })
  operationId!: string | null;

  @Column({ type: 'timestamptz', name: 'started_at' })
  startedAt!: Date;

  @Column({ type: 'timestamptz', name: 'finished_at' })
  finishedAt!: Date;

  @Column({ type: 'jsonb', name: 'report' })
  report!: Record<string, unknown>;
}
