import { Queue, type JobsOptions } from 'bullmq';
import IORedis, { type Redis } from 'ioredis';
import type { OperationType } from '../entities';
import { OPERATION_TYPE_NAMES, WORKED_TYPES, type OPERATIONS, type PayloadOf } from '../operations/types';

/**
 * Everything the producer and the consumers must agree on: queue names, payloads, default job
 * options. Payloads carry ids only — never tokens, auth keys or user data — because job data is
 * stored in Redis and shown in Bull Board.
 */

/** One queue per operation type (src/operations/types), and the webhook deliveries'. */
export type QueueName = OperationType | 'webhooks';
export const QUEUE_NAMES: readonly QueueName[] = [...OPERATION_TYPE_NAMES, 'webhooks'];
/** The queues whose jobs run a workflow call through the operation processors. */
export const OPERATION_QUEUES = WORKED_TYPES;

/** Who asked for the operation; shown in Bull Board, never used for decisions. */
interface Requested {
  requestedBy?: string;
}

export interface ProvisionJobData extends Requested {
  operationId: string;
  agentId: string;
  instanceId: string;
  provisioningJobId: string;
}
export interface AgentJobData extends Requested {
  operationId: string;
  agentId: string;
}
export interface RollbackJobData extends Requested {
  operationId: string;
  provisioningJobId: string;
}
export interface ReconcileJobData extends Requested {
  operationId?: string;
  trigger: 'schedule' | 'manual';
}
/** One webhook delivery; the job id is the delivery id (the `webhook-id` the receiver sees). */
export interface WebhookJobData {
  deliveryId: string;
  subscriptionId: string;
  type: string;
}

/** Each queue's payload: an operation type's is the kind its descriptor declares. */
export type JobPayloads = { [K in OperationType]: PayloadOf[(typeof OPERATIONS)[K]['payload']] } & { webhooks: WebhookJobData };

export interface QueueDefaults {
  attempts: number;
  backoffMs: number;
}

/** Retry and retention policy for every queue, in one place. */
export function defaultJobOptions(d: QueueDefaults): JobsOptions {
  return {
    attempts: d.attempts,
    backoff: { type: 'exponential', delay: d.backoffMs, jitter: 0.5 },
    // Bounded retention: history lives in PostgreSQL (operations, events), Redis keeps enough
    // for Bull Board to show recent work and failures.
    removeOnComplete: { age: 7 * 24 * 3600, count: 1000 },
    removeOnFail: { age: 30 * 24 * 3600, count: 5000 },
  };
}

/**
 * A webhook delivery is retried with exponential backoff (delay, 2×delay, 4×delay …): with the
 * defaults, 16 attempts 5 s apart at first, the retries span 5 s × (2^15 − 1) ≈ 45.5 hours.
 */
export function webhookJobOptions(d: { attempts: number; backoffMs: number }): JobsOptions {
  return {
    attempts: d.attempts,
    backoff: { type: 'exponential', delay: d.backoffMs },
    removeOnComplete: { age: 24 * 3600, count: 1000 },
    removeOnFail: { age: 30 * 24 * 3600, count: 5000 },
  };
}

/** Deterministic job ids make enqueueing idempotent: BullMQ ignores an add whose id already exists. */
export const jobIds = {
  operation: (operationId: string) => `op-${operationId}`,
  rollback: (provisioningJobId: string) => `rollback-${provisioningJobId}`,
};

/**
 * Producers (the API) should fail fast when Redis is down instead of queueing commands in memory
 * while a client waits; workers need `maxRetriesPerRequest: null` so blocking calls survive
 * reconnects, as BullMQ requires.
 */
export function createProducerConnection(redisUrl: string): Redis {
  return new IORedis(redisUrl, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 5000,
    lazyConnect: false,
  });
}

export function createWorkerConnection(redisUrl: string): Redis {
  return new IORedis(redisUrl, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

export type Queues = { [K in QueueName]: Queue<JobPayloads[K]> };

export function createQueues(deps: { connection: Redis; prefix: string; defaults: QueueDefaults }): Queues {
  const defaultJobOpts = defaultJobOptions(deps.defaults);
  const make = <K extends QueueName>(name: K) =>
    new Queue<JobPayloads[K]>(name, { connection: deps.connection, prefix: deps.prefix, defaultJobOptions: defaultJobOpts });
  return Object.fromEntries(QUEUE_NAMES.map((name) => [name, make(name)])) as Queues;
}

export async function closeQueues(queues: Queues): Promise<void> {
  await Promise.all(Object.values(queues).map((q) => q.close()));
}
