import express, { type Router } from 'express';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../lib/logger';
import { reportGauges, type ReconcileReport, type Reconciler } from '../reconcile';
import { actorOf } from './auth';
import { HttpProblem } from './problem';
import { serve } from './routing';
import { links, operationView } from './views';

export interface ReconcileRouterDeps {
  reconciler: Pick<Reconciler, 'latestReport' | 'requestPass'>;
}

const REPORT = '/v1/reconcile';

/**
 * GET /v1/reconcile: the latest report (whichever worker ran it; reports live in PostgreSQL).
 * POST /v1/reconcile: queue one pass now → 202 with the operation to follow. Mounted under /v1
 * behind the bearer token, like every other /v1 route; reading needs scope read, running operate.
 */
export function createReconcileRouter(deps: ReconcileRouterDeps): Router {
  const router = express.Router();
  serve(router, {
    getReconcileReport: async (_req, res) => {
      const report = await deps.reconciler.latestReport();
      if (!report) {
        throw new HttpProblem('not-found', 'No reconcile pass has finished yet. POST /v1/reconcile runs one now.');
      }
      res.json({ report, links: { self: REPORT, ...(report.operationId ? { operation: links.operation(report.operationId) } : {}) } });
    },
    requestReconcilePass: async (_req, res) => {
      const { operation, created } = await deps.reconciler.requestPass({ requestedBy: actorOf(res) });
      res.status(created ? 202 : 200).json({
        operation: operationView(operation),
        job: { queue: 'reconcile', id: operation.queueJobId },
        links: { operation: links.operation(operation.id), report: REPORT },
      });
    },
  });
  return router;
}

export const RECONCILE_FINDINGS_METRIC = 'tailfleet_reconcile_findings';
export const RECONCILE_LAST_PASS_METRIC = 'tailfleet_reconcile_last_pass_timestamp_seconds';

/**
 * The findings gauge, read from the latest stored report when Prometheus scrapes. Passes run in
 * worker processes; reading the report at scrape time makes an API process's /metrics show the same
 * numbers as GET /v1/reconcile (the registerQueueMetrics pattern). Replaces the plain gauge of the
 * same name in the registry.
 */
export function registerReconcileMetrics(
  registry: Registry,
  reconciler: Pick<Reconciler, 'latestReport'>,
  logger: Logger,
): void {
  for (const name of [RECONCILE_FINDINGS_METRIC, RECONCILE_LAST_PASS_METRIC]) {
    if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
  }
  // One database read per scrape serves both gauges.
  let pending: Promise<ReconcileReport | null> | null = null;
  const latest = () => {
    pending ??= reconciler.latestReport().finally(() => setImmediate(() => (pending = null)));
    return pending;
  };
  new Gauge({
    name: RECONCILE_FINDINGS_METRIC,
    help: 'Findings of the latest reconcile pass by kind (orphan_servers, orphan_devices, drifted_instances, stuck_instances, repairs, errors).',
    labelNames: ['kind'] as const,
    registers: [registry],
    async collect() {
      try {
        const report = await latest();
        if (!report) return;
        for (const [kind, value] of Object.entries(reportGauges(report))) this.set({ kind }, value);
      } catch (err) {
        logger.warn({ err }, 'Could not read the latest reconcile report for /metrics');
      }
    },
  });
  new Gauge({
    name: RECONCILE_LAST_PASS_METRIC,
    help: 'When the latest reconcile pass finished (Unix time); alert when it stops moving.',
    registers: [registry],
    async collect() {
      try {
        const report = await latest();
        if (report) this.set(Date.parse(report.finishedAt) / 1000);
      } catch {
        // Already logged by the findings gauge.
      }
    },
  });
}
