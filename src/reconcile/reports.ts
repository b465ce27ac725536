import type { JobType } from 'bullmq';
import type { DataSource } from 'typeorm';
import { insertOperation } from '../db/operation.repository';
import type { Repositories } from '../db/repositories';
import { transition } from '../db/transitions';
import type { Operation } from '../entities';
import { ReconcileReportRecord } from '../entities/reconcile-report.entity';
import { jobIds, type Queues } from '../queues/queues';
import { LIVE_JOB_STATES } from './queue-state';
import type { ReconcileReport } from './types';

export interface ReconcileReportsDeps {
  /** The reconcile_reports table (this room's own) and the operation writes of requestPass. */
  dataSource: DataSource;
  repositories: Pick<Repositories, 'operations' | 'operationQueries'>;
  queues: Pick<Queues, 'reconcile'>;
  keep?: number;
}

/**
 * The stored reports and the request for a pass: all an API process needs, so it can answer
 * GET/POST /v1/reconcile without cloud clients.
 */
export class ReconcileReports {
  constructor(private readonly deps: ReconcileReportsDeps) {}

  /** The newest stored report, from whichever process ran it; null before the first pass. */
  async latestReport(): Promise<ReconcileReport | null> {
    const row = await this.repo().findOne({ where: {}, order: { id: 'DESC' } });
    return row ? toReport(row) : null;
  }

  /**
   * Queues one pass now (POST /v1/reconcile). A manual pass that is still queued is reused rather
   * than stacking a second one behind it. The Operation row comes first so a failed enqueue leaves
   * a visible failed operation instead of nothing.
   */
  async requestPass(): Promise<{ operation: Operation; created: boolean }> {
    const { repositories: repos, queues } = this.deps;
    const pending = await repos.operationQueries.latestQueued('reconcile');
    if (pending) {
      const job = pending.queueJobId ? await queues.reconcile.getJob(pending.queueJobId) : undefined;
      if (job && LIVE_JOB_STATES.includes((await job.getState()) as JobType)) return { operation: pending, created: false };
      // Its job is gone (Redis lost it): close it so it does not look queued forever.
      await this.failLostPassOperation(pending.id);
    }
    const { operation } = await insertOperation(this.deps.dataSource, { type: 'reconcile', reason: 'reconcile pass requested' });
    const jobId = jobIds.operation(operation.id);
    try {
      await queues.reconcile.add('reconcile', { operationId: operation.id, trigger: 'manual' }, { jobId, attempts: 1 });
    } catch (err) {
      await this.failUnqueuedPassOperation(operation.id, err);
      throw err;
    }
    await repos.operations.update(operation.id, { queueJobId: jobId });
    operation.queueJobId = jobId;
    return { operation, created: true };
  }

  /** Operation status write: a queued pass whose job Redis no longer has is closed as failed. */
  private async failLostPassOperation(operationId: string): Promise<void> {
    await transition(this.deps.dataSource, {
      entity: 'operation',
      id: operationId,
      from: ['queued'],
      to: 'failed',
      reason: 'reconcile job no longer in the queue; superseded by a new request',
      operationId,
      patch: { error: 'Job lost from the queue; superseded by a new reconcile request', finishedAt: new Date() },
    }).catch(() => undefined);
  }

  /** Operation status write: a pass whose job could not be added is closed as failed. */
  private async failUnqueuedPassOperation(operationId: string, err: unknown): Promise<void> {
    await transition(this.deps.dataSource, {
      entity: 'operation',
      id: operationId,
      from: ['queued'],
      to: 'failed',
      reason: 'could not enqueue the reconcile pass',
      operationId,
      patch: { error: `Queue unavailable: ${(err as Error).message}`, finishedAt: new Date() },
    }).catch(() => undefined);
  }

  async save(report: ReconcileReport): Promise<string> {
    const repo = this.repo();
    const row = await repo.save(
      repo.create({
        trigger: report.trigger,
        operationId: report.operationId,
        startedAt: new Date(report.startedAt),
        finishedAt: new Date(report.finishedAt),
        report: report as unknown as Record<string, unknown>,
      }),
    );
    await repo
      .createQueryBuilder()
      .delete()
      .where(`id <= (SELECT max(id) - :keep FROM ${repo.metadata.tableName})`, { keep: this.deps.keep ?? 200 })
      .execute();
    return String(row.id);
  }

  private repo() {
    return this.deps.dataSource.getRepository(ReconcileReportRecord);
  }
}

/** Metric values of a report: what the latest pass found, and what it repaired. */
export function reportGauges(report: ReconcileReport): Record<string, number> {
  return {
    orphan_servers: report.summary.orphanServers,
    orphan_devices: report.summary.orphanDevices,
    drifted_instances: report.summary.driftedInstances,
    stuck_instances: report.summary.stuckInstances,
    repairs: report.summary.repairs,
    errors: report.summary.errors,
  };
}

function toReport(row: ReconcileReportRecord): ReconcileReport {
  return { ...(row.report as unknown as ReconcileReport), id: String(row.id) };
}
