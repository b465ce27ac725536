import type { DataSource } from 'typeorm';
import type { Repositories } from '../db/repositories';
import type { Operation } from '../entities';
import { ReconcileReportRecord } from '../entities/reconcile-report.entity';
import type { OperationLedger } from '../operations/ledger';
import type { Outbox } from '../operations/outbox';
import type { ReconcileReport } from './types';

export interface ReconcileReportsDeps {
  /** The reconcile_reports table (this room's own). */
  dataSource: DataSource;
  repositories: Pick<Repositories, 'operations'>;
  ledger: Pick<OperationLedger, 'acceptReconcile'>;
  outbox: Pick<Outbox, 'deliver'>;
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
   * Accepts one pass now (POST /v1/reconcile). A manual pass still queued is reused rather than
   * stacking a second one behind it; its delivery, like every operation's, is the outbox's and the
   * relay's business, so Redis being down delays the pass but never refuses it.
   */
  async requestPass(opts: { requestedBy?: string } = {}): Promise<{ operation: Operation; created: boolean }> {
    const pending = await this.deps.repositories.operations.findLatestOfType('reconcile', ['queued']);
    if (pending) return { operation: pending, created: false };
    const { operation } = await this.deps.ledger.acceptReconcile(opts);
    await this.deps.outbox.deliver(operation);
    return { operation, created: true };
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
    needs_attention: report.summary.needsAttention ?? 0,
    errors: report.summary.errors,
  };
}

function toReport(row: ReconcileReportRecord): ReconcileReport {
  return { ...(row.report as unknown as ReconcileReport), id: String(row.id) };
}
