import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../lib/logger';
import type { Queues } from '../queues/queues';
import { withDeadline } from '../operations/outbox';

export const QUEUE_JOBS_METRIC = 'tailfleet_queue_jobs';

const STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'] as const;

/**
 * Job counts per queue and state, read from BullMQ when Prometheus scrapes (so the numbers are
 * never older than the scrape and no timer runs in the API process).
 */
export function registerQueueMetrics(
  registry: Registry,
  queues: Queues,
  logger: Logger,
  timeoutMs = 2000,
): Gauge<'queue' | 'state'> {
  // A second app on the same registry (tests, a restarted server) takes over the gauge.
  if (registry.getSingleMetric(QUEUE_JOBS_METRIC)) registry.removeSingleMetric(QUEUE_JOBS_METRIC);
  return new Gauge({
    name: QUEUE_JOBS_METRIC,
    help: 'Jobs in each BullMQ queue by state, read at scrape time.',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      await Promise.all(
        Object.values(queues).map(async (queue) => {
          try {
            const counts = await withDeadline(queue.getJobCounts(...STATES), timeoutMs, 'Redis');
            for (const state of STATES) this.set({ queue: queue.name, state }, counts[state] ?? 0);
          } catch (err) {
            // Redis down: leave the queue out rather than fail the whole scrape.
            logger.warn({ err, queue: queue.name }, 'Could not read job counts for /metrics');
          }
        }),
      );
    },
  });
}
