import { z } from 'zod';
import { ACTOR_MAX_LENGTH, type Operation, type OperationType } from '../entities';
import { InvalidInputError } from '../errors';
import { OPERATIONS, type PayloadKind, type PayloadOf } from '../operations/types';
import { jobIds, QUEUE_NAMES, type JobPayloads, type QueueName } from './queues';

/**
 * The one place that turns an operation into a queue job, and a job back into what it claims to be.
 * Payloads are parsed, not trusted: Bull Board lets an operator add or duplicate a job by hand, and a
 * job whose data does not match its operation must fail without touching anything.
 */

const uuid = z.uuid();
// Who asked, copied into the job so Bull Board shows it; never used for decisions.
const requestedBy = z.string().max(ACTOR_MAX_LENGTH).optional();

const payloadSchemas = {
  agent: z.object({ operationId: uuid, agentId: uuid, requestedBy }).strict(),
  provision: z.object({ operationId: uuid, agentId: uuid, instanceId: uuid, provisioningJobId: uuid, requestedBy }).strict(),
  rollback: z.object({ operationId: uuid, provisioningJobId: uuid, requestedBy }).strict(),
  reconcile: z.object({ operationId: uuid.optional(), trigger: z.enum(['schedule', 'manual']), requestedBy }).strict(),
} as const satisfies { [K in PayloadKind]: z.ZodType<PayloadOf[K]> };

const webhookPayload = z.object({ deliveryId: uuid, subscriptionId: uuid, type: z.string().max(64) }).strict();

/** Each queue's payload schema: an operation type's is that of the payload kind its descriptor declares. */
export const jobPayloadSchemas = Object.fromEntries(
  QUEUE_NAMES.map((q) => [q, q === 'webhooks' ? webhookPayload : payloadSchemas[OPERATIONS[q].payload]]),
) as unknown as { [K in QueueName]: z.ZodType<JobPayloads[K]> };

/** A job that cannot be what it says it is: trying it again cannot help. */
export class JobMismatchError extends InvalidInputError {
  constructor(message: string) {
    super(message);
    this.name = 'JobMismatchError';
  }
}

/** The queue that carries operations of a type (every type has one). */
export function queueOf(type: OperationType): QueueName {
  return type;
}

/** The id of an operation's job: the one its row names, else `op-<id>`. */
export function jobIdOf(operation: Pick<Operation, 'id' | 'queueJobId'>): string {
  return operation.queueJobId ?? jobIds.operation(operation.id);
}

export interface OperationJob<K extends QueueName = QueueName> {
  queue: K;
  name: K;
  jobId: string;
  data: JobPayloads[K];
}

/**
 * The job that delivers an operation. The job id is the operation's own (`op-<id>`, or the fixed
 * `rollback-<provisioning job>`), so adding it again while it exists is a no-op in BullMQ.
 * A provision needs its instance id, which the operation row does not hold: the caller passes it.
 */
/** A value the operation must carry for its job; a clear error naming what is missing otherwise. */
function required<T>(operation: Operation, value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) throw new Error(`${operation.type} operation ${operation.id} has no ${what}`);
  return value;
}

export function operationJob(operation: Operation, extra: { instanceId?: string } = {}): OperationJob {
  const type = operation.type;
  const base = { operationId: operation.id, requestedBy: operation.requestedBy };
  let data: object;
  switch (OPERATIONS[type].payload satisfies PayloadKind) {
    case 'provision':
      data = {
        ...base,
        agentId: required(operation, operation.agentId, 'agent'),
        instanceId: required(operation, extra.instanceId, 'instance'),
        provisioningJobId: required(operation, operation.provisioningJobId, 'provisioning job'),
      };
      break;
    case 'rollback':
      data = { ...base, provisioningJobId: required(operation, operation.provisioningJobId, 'provisioning job') };
      break;
    case 'agent':
      data = { ...base, agentId: required(operation, operation.agentId, 'agent') };
      break;
    case 'reconcile':
      data = { ...base, trigger: 'manual' };
      break;
  }
  return { queue: type, name: type, jobId: jobIdOf(operation), data } as OperationJob;
}

/**
 * Parses a job's payload for its queue and checks it against the operation it names: the queue must
 * carry that operation's type, the job must be the operation's own delivery (its job id), and every id
 * in the payload must be the operation's. Throws JobMismatchError otherwise.
 */
export function parseJobPayload<K extends QueueName>(queue: K, data: unknown): JobPayloads[K] {
  const parsed = jobPayloadSchemas[queue].safeParse(data);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || 'data'}: ${i.message}`).join('; ');
    throw new JobMismatchError(`Job data is not a ${queue} payload (${issues})`);
  }
  return parsed.data as JobPayloads[K];
}

export function checkJobAgainstOperation(
  queue: QueueName,
  job: { id?: string | undefined; data: { agentId?: string; provisioningJobId?: string } },
  operation: Operation,
): void {
  const problems: string[] = [];
  if (queueOf(operation.type) !== queue) problems.push(`operation ${operation.id} is a ${operation.type}, not a ${queue}`);
  const expectedJobId = jobIdOf(operation);
  if (job.id !== expectedJobId) problems.push(`job ${job.id} is not the operation's delivery (${expectedJobId})`);
  if (job.data.agentId !== undefined && job.data.agentId !== operation.agentId) {
    problems.push(`agent ${job.data.agentId} is not the operation's (${operation.agentId})`);
  }
  if (job.data.provisioningJobId !== undefined && job.data.provisioningJobId !== operation.provisioningJobId) {
    problems.push(`provisioning job ${job.data.provisioningJobId} is not the operation's (${operation.provisioningJobId})`);
  }
  if (problems.length > 0) throw new JobMismatchError(`Job does not match its operation: ${problems.join('; ')}`);
}

/** How BullMQ words the failure of a job that stalled too often (its workers died). */
export function isStallFailure(reason: string): boolean {
  return /stalled|started more than allowable/i.test(reason);
}

/** Times one job may be failed by BullMQ for stalling over its life and still be delivered again. */
export const STALL_REQUEUE_LIMIT = 5;
