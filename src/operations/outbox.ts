import type { Job, JobState, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Operation } from '../entities';
import { UnavailableError } from '../errors';
import type { Logger } from '../lib/logger';
import { operationJob } from '../queues/jobs';
import type { QueueName, Queues } from '../queues/queues';

/**
 * Carries accepted operations from PostgreSQL to BullMQ. The operation row is the outbox entry: a
 * queued operation is work that must reach a worker, and its job id is fixed by the row, so adding
 * it again while the job exists is a no-op. The API calls `deliver` right after its commit (the fast
 * path); the relay calls it again for every queued operation whose job Redis does not hold.
 * Nothing here decides whether work is accepted: a failed add only delays delivery.
 */

export interface OutboxDeps {
  queues: Queues;
  /** The connection the queues use (for the one-round-trip presence check). */
  connection: Redis;
  logger: Logger;
  /** How long one add may take before the caller stops waiting (default 2000). */
  redisTimeoutMs?: number;
}

export type JobPresence = 'missing' | JobState;

export class Outbox {
  private readonly queues: Queues;
  private readonly connection: Redis;
  private readonly logger: Logger;
  private readonly redisTimeoutMs: number;

  constructor(deps: OutboxDeps) {
    this.queues = deps.queues;
    this.connection = deps.connection;
    this.logger = deps.logger;
    this.redisTimeoutMs = deps.redisTimeoutMs ?? 2000;
  }

  /**
   * Best-effort delivery after commit: true when the job is in the queue, false when Redis could not
   * take it now (the relay will). Never throws: the operation is accepted either way.
   */
  async deliver(operation: Operation, extra: { instanceId?: string } = {}): Promise<boolean> {
    try {
      await this.add(operation, extra);
      return true;
    } catch (err) {
      this.logger.warn(
        { err: { message: (err as Error).message }, operationId: operation.id, type: operation.type },
        'Operation accepted but not yet in the queue; the relay will deliver it',
      );
      return false;
    }
  }

  /** Adds the operation's job (a no-op when it exists). Throws when Redis does not answer in time. */
  async add(operation: Operation, extra: { instanceId?: string } = {}): Promise<Job> {
    const job = operationJob(operation, extra);
    const queue = this.queues[job.queue] as Queue;
    const options = operation.type === 'reconcile' ? { jobId: job.jobId, attempts: 1 } : { jobId: job.jobId };
    // An add that outlives the deadline may still land later: harmless, the job is the operation's own.
    return withDeadline(queue.add(job.name, job.data, options) as Promise<Job>, this.redisTimeoutMs, 'Redis');
  }

  /**
   * Whether each job is in its queue, in one round trip: 'missing' or present (its state is read only
   * when asked for, because that costs a script call per job).
   */
  async presence(jobs: ReadonlyArray<{ queue: QueueName; jobId: string }>): Promise<boolean[]> {
    if (jobs.length === 0) return [];
    const pipeline = this.connection.pipeline();
    for (const j of jobs) pipeline.exists(this.queues[j.queue].toKey(j.jobId));
    const results = await withDeadline(pipeline.exec(), this.redisTimeoutMs * 5, 'Redis');
    return (results ?? []).map(([err, n]: [Error | null, unknown]) => {
      if (err) throw err;
      return n === 1;
    });
  }

  async state(queue: QueueName, jobId: string): Promise<JobPresence> {
    const state = await this.queues[queue].getJobState(jobId);
    return state === 'unknown' ? 'missing' : state;
  }

  /** The job of an operation, when Redis has it. */
  async job(queue: QueueName, jobId: string): Promise<Job | undefined> {
    return (await this.queues[queue].getJob(jobId)) ?? undefined;
  }
}

export class DeadlineError extends UnavailableError {
  override readonly code = 'deadline_passed';
  constructor(what: string, ms: number) {
    super(`${what} did not answer within ${ms} ms`);
    this.name = 'DeadlineError';
  }
}

/** Rejects with DeadlineError when `promise` has not settled after `ms`; the promise itself keeps running. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeadlineError(what, ms)), ms);
    // A rejection after the deadline lands here too, on a settled promise: never unhandled.
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
