import { Worker, type Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../lib/logger';
import type { ReconcileJobData } from '../queues/queues';
import type { Reconciler, ReconcileReport } from '../reconcile';
import { runOperation, type RunnerDeps } from './run-operation';

/** What a finished reconcile job keeps in Redis: the counts, not the whole report (that is in PostgreSQL). */
export type ReconcileJobResult = ReconcileReport['summary'] & { reportId: string | null };

export const RECONCILE_SCHEDULER_ID = 'reconcile-interval';

/**
 * A manual pass (POST /v1/reconcile) has an Operation row and goes through runOperation like every
 * other operation; a scheduled pass has none and just runs. Either way the pass itself stores its
 * report, so the job result is only a summary for Bull Board.
 */
export function createReconcileProcessor(deps: RunnerDeps & { reconciler: Pick<Reconciler, 'runPass'> }) {
  return async (job: Job<ReconcileJobData>, token?: string, signal?: AbortSignal) => {
    const operationId = job.data.operationId;
    if (operationId) {
      return runOperation(
        deps,
        'reconcile',
        job,
        token,
        async ({ reporter }) => {
          await reporter.step('reconcile', 10, 'listing servers and devices');
          const report = await deps.reconciler.runPass({ trigger: 'manual', operationId });
          return summarize(report);
        },
        signal,
      );
    }
    const started = process.hrtime.bigint();
    const observe = (outcome: string) => {
      deps.metrics.jobs.inc({ queue: 'reconcile', outcome });
      deps.metrics.jobDuration.observe({ queue: 'reconcile', outcome }, Number(process.hrtime.bigint() - started) / 1e9);
    };
    try {
      const report = await deps.reconciler.runPass({ trigger: job.data.trigger ?? 'schedule' });
      observe('completed');
      return summarize(report);
    } catch (err) {
      observe('failed');
      deps.logger.error({ err, jobId: job.id }, '[Reconcile] Scheduled pass failed');
      throw err;
    }
  };
}

function summarize(report: ReconcileReport): ReconcileJobResult {
  return { ...report.summary, reportId: report.id };
}

/**
 * Keeps exactly one job scheduler for the reconcile queue: every `intervalSeconds`, or none when the
 * interval is 0. Upserting is idempotent, so every worker process may call this at start-up.
 */
export async function scheduleReconcile(queue: Queue<ReconcileJobData>, intervalSeconds: number): Promise<void> {
  if (intervalSeconds <= 0) {
    await queue.removeJobScheduler(RECONCILE_SCHEDULER_ID);
    return;
  }
  await queue.upsertJobScheduler(
    RECONCILE_SCHEDULER_ID,
    { every: intervalSeconds * 1000 },
    {
      name: 'reconcile',
      data: { trigger: 'schedule' },
      // A failed pass is not retried: the next tick is a fresh attempt.
      opts: { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
    },
  );
}

/**
 * Re-creates the reconcile job scheduler when Redis has lost it (the relay calls this every pass);
 * a look-up when it is there, so the schedule's next run is not disturbed.
 */
export async function ensureReconcileSchedule(queue: Queue<ReconcileJobData>, intervalSeconds: number): Promise<boolean> {
  if (intervalSeconds <= 0) return false;
  if (await queue.getJobScheduler(RECONCILE_SCHEDULER_ID)) return false;
  await scheduleReconcile(queue, intervalSeconds);
  return true;
}

/**
 * One reconcile job at a time per worker; the pass also takes a PostgreSQL advisory lock, so several
 * worker processes never run passes concurrently either.
 */
export function createReconcileWorker(deps: {
  connection: Redis;
  prefix: string;
  processor: ReturnType<typeof createReconcileProcessor>;
  logger: Logger;
  autorun?: boolean;
}): Worker<ReconcileJobData> {
  const worker = new Worker<ReconcileJobData>('reconcile', deps.processor, {
    connection: deps.connection,
    prefix: deps.prefix,
    concurrency: 1,
    autorun: deps.autorun ?? false,
    // A pass over thousands of servers can take a while; the lock is renewed while it runs.
    lockDuration: 120_000,
  });
  worker.on('error', (err) => deps.logger.error({ err, queue: 'reconcile' }, 'Worker error'));
  return worker;
}
