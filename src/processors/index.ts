import type { Job, Queue } from 'bullmq';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { OPERATIONS, WORKED_TYPES, type OperationDescriptor, type WorkedType } from '../operations/types';
import type { OperationLedger } from '../operations/ledger';
import type { JobPayloads } from '../queues/queues';
import type { Workflows } from '../workflows';
import { runOperation } from './run-operation';

export type OperationQueueName = WorkedType;

export interface ProcessorDeps {
  ledger: OperationLedger;
  /** What the descriptors' workflow calls run on (src/workflows, createWorkflows). */
  workflows: Workflows;
  logger: Logger;
  metrics: Pick<Metrics, 'jobs' | 'jobDuration'>;
  /** Each processor pauses its own queue on a 429. */
  queues: Record<OperationQueueName, Pick<Queue, 'rateLimit' | 'getRateLimitTtl' | 'name'>>;
  /** Shared with the workers' `failed` listener: failures the processors already recorded. */
  handledFailures?: Set<string>;
  /** How long a job waits when the database is unreachable (default 5000). */
  outageRetryMs?: number;
  /** Runs a job's workflow in the Hetzner project of the instance its payload names (default: as it is). */
  inProject?: <T>(data: { agentId?: string; instanceId?: string; provisioningJobId?: string }, run: () => Promise<T>) => Promise<T>;
}

export type OperationProcessor<K extends OperationQueueName> = (job: Job<JobPayloads[K]>, token?: string, signal?: AbortSignal) => Promise<unknown>;
export type Processors = { [K in OperationQueueName]: OperationProcessor<K> };

/**
 * One processor per operation queue, each the descriptor's workflow call (src/operations/types)
 * run through runOperation.
 */
export function createProcessors(deps: ProcessorDeps): Processors {
  const processor = <K extends OperationQueueName>(type: K): OperationProcessor<K> => {
    const runner = {
      ledger: deps.ledger,
      handledFailures: deps.handledFailures,
      outageRetryMs: deps.outageRetryMs,
      logger: deps.logger,
      metrics: deps.metrics,
      queue: deps.queues[type],
    };
    const descriptor = OPERATIONS[type] as OperationDescriptor;
    const inProject = deps.inProject ?? ((_data, run) => run());
    return (job, token, signal) =>
      runOperation(
        runner,
        type,
        job,
        token,
        ({ reporter, operation }) => inProject(job.data as object, () => descriptor.run!(deps.workflows, job as never, reporter, operation)),
        signal,
      );
  };
  return Object.fromEntries(WORKED_TYPES.map((type) => [type, processor(type)])) as Processors;
}
