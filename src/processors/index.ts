import type { Queue } from 'bullmq';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { OPERATION_QUEUES } from '../queues/queues';
import type { OperationLedger } from '../operations/ledger';
import type { HibernateWorkflow, PowerWorkflow, ProvisionWorkflow, TeardownWorkflow } from '../workflows';
import { createDestroyProcessor } from './destroy.processor';
import { createHibernateProcessor } from './hibernate.processor';
import { createProvisionProcessor } from './provision.processor';
import { createRollbackProcessor } from './rollback.processor';
import { createStartProcessor } from './start.processor';
import { createStopProcessor } from './stop.processor';
import { createWakeProcessor } from './wake.processor';

export type OperationQueueName = (typeof OPERATION_QUEUES)[number];

export interface ProcessorDeps {
  ledger: OperationLedger;
  provision: Pick<ProvisionWorkflow, 'provision'>;
  power: Pick<PowerWorkflow, 'stop' | 'start'>;
  teardown: Pick<TeardownWorkflow, 'destroy' | 'rollback'>;
  hibernation: Pick<HibernateWorkflow, 'hibernate' | 'wake'>;
  logger: Logger;
  metrics: Pick<Metrics, 'jobs' | 'jobDuration'>;
  /** Each processor pauses its own queue on a 429. */
  queues: Record<OperationQueueName, Pick<Queue, 'rateLimit' | 'getRateLimitTtl' | 'name'>>;
  /** Shared with the workers' `failed` listener: failures the processors already recorded. */
  handledFailures?: Set<string>;
  /** How long a job waits when the database is unreachable (default 5000). */
  outageRetryMs?: number;
}

/** One processor per operation queue, each a thin call into one workflow through runOperation. */
export function createProcessors(deps: ProcessorDeps) {
  const base = (q: OperationQueueName) => ({
    ledger: deps.ledger,
    handledFailures: deps.handledFailures,
    outageRetryMs: deps.outageRetryMs,
    logger: deps.logger,
    metrics: deps.metrics,
    queue: deps.queues[q],
    provision: deps.provision,
    power: deps.power,
    teardown: deps.teardown,
    hibernation: deps.hibernation,
  });
  return {
    provision: createProvisionProcessor(base('provision')),
    stop: createStopProcessor(base('stop')),
    start: createStartProcessor(base('start')),
    destroy: createDestroyProcessor(base('destroy')),
    rollback: createRollbackProcessor(base('rollback')),
    hibernate: createHibernateProcessor(base('hibernate')),
    wake: createWakeProcessor(base('wake')),
  };
}

export type Processors = ReturnType<typeof createProcessors>;
