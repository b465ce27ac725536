import { lastActivityOf, type LastActivity } from '../db/activity.repository';
import type { JobState, Queue } from 'bullmq';
import type { Repositories } from '../db/repositories';
import { UUID } from '../db/uuid';
import type { Agent, AgentStatus, Event, Instance, Operation } from '../entities';
import { NotFoundError } from '../errors';
import { afterIdCursor, decodeCursor, encodeCursor, nextIdCursor } from '../lib/cursor';
import type { Logger } from '../lib/logger';
import type { Queues } from '../queues/queues';
import { withDeadline } from './outbox';

/**
 * The read side the API serves: agents with their current instance, an agent's events, an operation
 * with its queue job's live state. Pages are keyset cursors handed out by encodeCursor.
 */

export interface ListAgentsQuery {
  limit: number;
  /** Opaque keyset cursor from a previous page (`nextCursor`). */
  cursor?: string;
  offset?: number;
  status?: AgentStatus[];
  /** Exact name. */
  name?: string;
  /** Every one of these labels. */
  labels?: Record<string, string>;
}

export interface AgentWithInstance {
  agent: Agent;
  instance: Instance | null;
  /** What last counted as its activity (src/policy); null: nothing yet. */
  lastActivity: LastActivity | null;
}

export interface AgentPage {
  items: AgentWithInstance[];
  nextCursor: string | null;
}

export interface AgentDetail extends AgentWithInstance {
  /** Most recent queued or running operation of the agent. */
  operation: Operation | null;
}

export interface EventPage {
  items: Event[];
  nextCursor: string | null;
}

export type QueueJobState = JobState | 'not_retained' | 'unavailable';

export interface QueueJobInfo {
  queue: string;
  id: string;
  state: QueueJobState;
  progress?: unknown;
  attemptsMade?: number;
  failedReason?: string | null;
  createdAt?: Date | null;
  processedAt?: Date | null;
  finishedAt?: Date | null;
}

export interface OperationDetail {
  operation: Operation;
  job: QueueJobInfo | null;
}

const BIGINT_MAX = 2n ** 63n - 1n;
const isEventId = (value: string) => /^\d{1,19}$/.test(value) && BigInt(value) <= BIGINT_MAX;

export interface OperationReadsDeps {
  repositories: Pick<Repositories, 'agents' | 'instances' | 'operations' | 'events' | 'agentList' | 'activity'>;
  queues: Queues;
  logger: Logger;
  /**
   * How long a read of a job's live state in Redis may take (default 5000). BullMQ waits
   * indefinitely for a connection that never came up, so the API must not.
   */
  redisTimeoutMs?: number;
}

export class OperationReads {
  constructor(private readonly deps: OperationReadsDeps) {}

  private get repos(): OperationReadsDeps['repositories'] {
    return this.deps.repositories;
  }

  async listAgents(query: ListAgentsQuery): Promise<AgentPage> {
    const page = await this.repos.agentList.list({
      limit: query.limit,
      status: query.status,
      name: query.name,
      labels: query.labels,
      offset: query.offset,
      after: afterIdCursor(query.cursor, UUID),
    });
    const ids = page.items.map((a) => a.id);
    const [instances, moments] = await Promise.all([this.repos.instances.currentOfAgents(ids), this.repos.activity.momentsOf(ids)]);
    const now = new Date();
    return {
      items: page.items.map((agent) => {
        const m = moments.get(agent.id);
        return { agent, instance: instances.get(agent.id) ?? null, lastActivity: m ? lastActivityOf(m, now) : null };
      }),
      nextCursor: nextIdCursor(page),
    };
  }

  async getAgent(agentId: string): Promise<AgentDetail> {
    const agent = await this.mustGetAgent(agentId);
    const [live, operation, moments] = await Promise.all([
      this.repos.instances.findLiveByAgent(agent.id),
      this.repos.operations.findActiveByAgent(agent.id),
      this.repos.activity.momentsOf([agent.id]),
    ]);
    const instance = live ?? (await this.repos.instances.findLatestByAgent(agent.id));
    const m = moments.get(agent.id);
    return { agent, instance, operation, lastActivity: m ? lastActivityOf(m, new Date()) : null };
  }

  async listEvents(agentId: string, page: { limit: number; cursor?: string }): Promise<EventPage> {
    await this.mustGetAgent(agentId);
    const afterId = page.cursor === undefined ? undefined : decodeCursor(page.cursor, isEventId);
    const events = await this.repos.events.listForAgent(agentId, { limit: page.limit + 1, afterId });
    const items = events.slice(0, page.limit);
    return { items, nextCursor: events.length > page.limit ? encodeCursor(items[items.length - 1]!.id) : null };
  }

  async getOperation(operationId: string): Promise<OperationDetail> {
    const operation = await this.repos.operations.findById(operationId);
    if (!operation) throw new NotFoundError(`Operation ${operationId} not found`);
    return { operation, job: await this.queueJobInfo(operation) };
  }

  private async mustGetAgent(agentId: string): Promise<Agent> {
    const agent = await this.repos.agents.findById(agentId);
    if (!agent) throw new NotFoundError(`Agent ${agentId} not found`);
    return agent;
  }

  private async queueJobInfo(operation: Operation): Promise<QueueJobInfo | null> {
    if (!operation.queueJobId) return null;
    const queue: Queue = this.deps.queues[operation.type];
    const timeoutMs = this.deps.redisTimeoutMs ?? 5000;
    const info: QueueJobInfo = { queue: queue.name, id: operation.queueJobId, state: 'not_retained' };
    try {
      const job = await withDeadline(queue.getJob(operation.queueJobId), timeoutMs, 'Redis');
      if (!job) return info;
      const state = await withDeadline(job.getState(), timeoutMs, 'Redis');
      return {
        ...info,
        state: state === 'unknown' ? 'not_retained' : state,
        progress: job.progress,
        attemptsMade: job.attemptsMade,
        failedReason: job.failedReason || null,
        createdAt: job.timestamp ? new Date(job.timestamp) : null,
        processedAt: job.processedOn ? new Date(job.processedOn) : null,
        finishedAt: job.finishedOn ? new Date(job.finishedOn) : null,
      };
    } catch (err) {
      // PostgreSQL is the source of truth; a Redis outage only hides the live job details.
      this.deps.logger.warn({ err, operationId: operation.id }, 'Could not read the queue job of an operation');
      return { ...info, state: 'unavailable' };
    }
  }
}
