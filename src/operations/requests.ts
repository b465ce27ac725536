import type { DataSource } from 'typeorm';
import { LifetimeExceededError } from '../errors';
import type { IdleStep } from '../entities';
import { IdempotencyKeyConflictError, LiveInstanceExistsError, TransitionConflictError } from '../db/errors';
import type { TransitionRequest } from '../db/transitions';
import type { Repositories } from '../db/repositories';
import type { OperationLedger } from './ledger';
import { withDeadline, type Outbox } from './outbox';
import { commandOf, type AgentCommandType } from './types';
import {
  Agent,
  Instance,
  Operation,
  ProvisioningJob,
  SYSTEM_ACTOR,
  type AgentSpec,
  type OperationType,
} from '../entities';
import type { Logger } from '../lib/logger';
import type { Queues } from '../queues/queues';
import { AgentNameTakenError, InvalidInputError, NotFoundError, StateConflictError } from '../errors';
import type { SpecChecker, SpecProblem } from '../clients/hetzner/catalogue';

/**
 * The command side: turns a request into an Operation row and a queue job (what the API reads is
 * read-models.ts). Rows are written first and the job is added after the commit, with a job id
 * derived from the row, so a worker always finds what it is asked to work on and a repeated add is a
 * no-op in BullMQ.
 */

/** The Idempotency-Key was first used for a different request (other agent, type or body). */
export class IdempotencyKeyReuseError extends InvalidInputError {
  override readonly code = 'idempotency_key_reused';
  constructor(message: string) {
    super(message);
    this.name = 'IdempotencyKeyReuseError';
  }
}


export interface OperationsDefaults {
  serverType: string;
  image: string;
  location: string;
  /** HETZNER_SSH_KEYS. */
  sshKeys?: string[];
  /** HETZNER_PLACEMENTS: an agent that names no place of its own gets these (the first is its location and type). */
  placements?: { location: string; serverType: string }[];
  /** HETZNER_PUBLIC_IPV4 (default true). */
  publicIpv4?: boolean;
  /** TAILFLEET_PUBLIC_URL is set: agents get the activity reporter unless their spec says otherwise. */
  reporter?: boolean;
  /** MAX_AGENT_LIFETIME_HOURS: no agent expires later than this after its creation. */
  maxLifetimeHours?: number | null;
}

/** The cloud's catalogue does not offer the server type in the location (422 naming the field). */
export class ServerSpecRejectedError extends InvalidInputError {
  override readonly code = 'server_spec_rejected';
  constructor(readonly problems: SpecProblem[]) {
    super(`The cloud cannot create this server: ${problems.map((p) => p.message).join('; ')}`);
    this.name = 'ServerSpecRejectedError';
  }
}

export interface OperationsDeps {
  dataSource: DataSource;
  queues: Queues;
  ledger: OperationLedger;
  outbox: Outbox;
  logger: Logger;
  defaults: OperationsDefaults;
  repositories: Repositories;
  /** Checks server type and location against the cloud's catalogue before a create is accepted; omitted, not checked. */
  catalogue?: SpecChecker;
  /** MAX_AGENTS: live agents allowed at once (null or omitted: no limit). */
  maxAgents?: number | null;
  /**
   * How long removing a cancelled operation's job from Redis may take (default 5000). BullMQ waits
   * indefinitely for a connection that never came up, so the API must not.
   */
  redisTimeoutMs?: number;
}

/**
 * A client's Idempotency-Key with what it is scoped to, as Stripe scopes them: a key belongs to the
 * token that sent it (another token's same key is another key), names one request (route and target;
 * reused for another, 422) and is kept IDEMPOTENCY_KEY_TTL_MS (reused after that, a new request).
 */
export interface IdempotencyKey {
  /** As the client sent it. */
  key: string;
  /** The token's id, or `bootstrap` for API_TOKEN (never contains ":"). */
  owner: string;
  /** Method and route template, e.g. `POST /v1/agents/:id/stop`; the target is the request's own id. */
  route: string;
}

export const IDEMPOTENCY_KEY_TTL_MS = 24 * 3600 * 1000;

/** Who is asking, for the operation's requestedBy and its events' actor, and the request's Idempotency-Key. */
export interface RequestOptions {
  idempotency?: IdempotencyKey;
  requestedBy?: string;
  /** Why tailfleet asks for it itself (a policy: "idle 30 min since …", "expired"). */
  reason?: string;
}

export interface CreateAgentInput {
  name: string;
  location?: string;
  serverType?: string;
  image?: string;
  sshKeys?: string[];
  labels?: Record<string, string>;
  userData?: string;
  placements?: { location: string; serverType: string }[];
  publicIpv4?: boolean;
  idle?: IdleStep[];
  /** false: no activity reporter on the machine. */
  reporter?: boolean;
  expiresAt?: Date;
  ttlSeconds?: number;
}

export interface CreateAgentResult {
  agent: Agent;
  instance: Instance;
  operation: Operation;
  provisioningJob: ProvisioningJob;
  /** false when an earlier request with the same Idempotency-Key created these rows. */
  created: boolean;
}

export interface CommandResult {
  operation: Operation;
  created: boolean;
}

export type RollbackTrigger = 'api' | 'auto' | 'sweep';

/** What a request asks for, to tell a replay from the reuse of a key for something else. */
interface AskedFor {
  type: OperationType;
  /** Method and route template; null for tailfleet's own keys. */
  route: string | null;
  agentId?: string;
  provisioningJobId?: string;
}

// Client keys and internal keys share one unique column; the prefixes keep a client from ever
// claiming `rollback:<id>` and blocking the exactly-once rollback of that job, and the owner keeps
// one token's key from ever naming another token's request.
const CLIENT_KEY_PREFIX = 'client:';
const CLIENT_KEY_SLOT = /^client:[^:]*:(.*)$/s;
const rollbackKey = (provisioningJobId: string) => `rollback:${provisioningJobId}`;
const keySlot = (k: IdempotencyKey) => `${CLIENT_KEY_PREFIX}${k.owner}:${k.key}`;

type AgentCommand = AgentCommandType;

/** The client-visible Idempotency-Key of an operation (internal keys are not the client's business). */
export function clientIdempotencyKey(operation: Operation): string | null {
  const match = CLIENT_KEY_SLOT.exec(operation.idempotencyKey ?? '');
  return match ? match[1]! : null;
}

// Event ids are PostgreSQL bigints: 19 digits may still be more than one holds.

/** Equal as JSON, whatever the order of object keys. */
/**
 * The expiry an agent is created with: its expiresAt or ttlSeconds, capped by the fleet's maximum
 * lifetime (which alone gives the expiry when the request names none). A request beyond the maximum
 * is refused rather than shortened: the client asked for something tailfleet will not do.
 */
export function agentExpiry(input: { expiresAt?: Date; ttlSeconds?: number }, now: Date, maxLifetimeHours: number | null): Date | null {
  const asked = input.ttlSeconds !== undefined ? new Date(now.getTime() + input.ttlSeconds * 1000) : (input.expiresAt ?? null);
  const limit = maxLifetimeHours === null ? null : new Date(now.getTime() + maxLifetimeHours * 3_600_000);
  if (asked && limit && asked.getTime() > limit.getTime()) throw new LifetimeExceededError(maxLifetimeHours!, limit);
  return asked ?? limit;
}

function sameJson(a: unknown, b: unknown): boolean {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canonical)
      : v && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => x.localeCompare(y)).map(([k, x]) => [k, canonical(x)]))
        : v;
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

export class OperationsService {
  private readonly ds: DataSource;
  private readonly queues: Queues;
  private readonly logger: Logger;
  private readonly defaults: OperationsDefaults;
  private readonly repos: Repositories;
  private readonly ledger: OperationLedger;
  private readonly outbox: Outbox;
  private readonly redisTimeoutMs: number;
  private readonly catalogue: SpecChecker | undefined;
  /** MAX_AGENTS (null: no limit); pools provision within it too. */
  readonly maxAgents: number | null;

  constructor(deps: OperationsDeps) {
    this.catalogue = deps.catalogue;
    this.maxAgents = deps.maxAgents ?? null;
    this.redisTimeoutMs = deps.redisTimeoutMs ?? 5000;
    this.ds = deps.dataSource;
    this.repos = deps.repositories;
    this.ledger = deps.ledger;
    this.outbox = deps.outbox;
    this.queues = deps.queues;
    this.logger = deps.logger;
    this.defaults = deps.defaults;
  }

  // ---------------------------------------------------------------------------------------------
  // commands

  /**
   * Accepted once the rows are committed: the provision job is delivered right after, and if Redis
   * cannot take it now the outbox relay delivers it as soon as it can. Redis being down never refuses
   * a request.
   */
  async createAgent(input: CreateAgentInput, opts: RequestOptions = {}): Promise<CreateAgentResult> {
    const placements = input.placements ?? (input.location === undefined && input.serverType === undefined ? this.defaults.placements : undefined);
    const publicIpv4 = input.publicIpv4 ?? this.defaults.publicIpv4;
    const spec: AgentSpec = {
      serverType: placements?.[0].serverType ?? input.serverType ?? this.defaults.serverType,
      location: placements?.[0].location ?? input.location ?? this.defaults.location,
      image: input.image ?? this.defaults.image,
      sshKeys: input.sshKeys ?? this.defaults.sshKeys ?? [],
      userData: input.userData ?? null,
      ...(placements && placements.length > 1 ? { placements } : {}),
      // Stored when it differs from the built-in default or was asked for, so a later change of the deployment's default does not change the agent.
      ...(publicIpv4 !== undefined && (input.publicIpv4 !== undefined || publicIpv4 === false) ? { publicIpv4 } : {}),
      ...(input.idle ? { idle: input.idle } : {}),
      reporter: this.defaults.reporter === true && input.reporter !== false,
    };
    const expiresAt = agentExpiry(input, new Date(), this.defaults.maxLifetimeHours ?? null);
    const labels = input.labels ?? {};
    const key = await this.claimableSlot(opts.idempotency);
    const route = opts.idempotency?.route ?? null;
    const asked = { name: input.name, spec, labels, route };

    if (key) {
      const replay = await this.replayCreate(key, asked);
      if (replay) return replay;
    }
    // Before anything is written: the cloud would refuse this server later, after a billed attempt.
    if (this.catalogue) {
      const problems = await this.catalogue.check(spec);
      if (problems.length > 0) throw new ServerSpecRejectedError(problems);
    }

    let rows: Omit<CreateAgentResult, 'created'>;
    try {
      const bundle = await this.ledger.acceptProvision({
        name: input.name,
        location: spec.location,
        serverType: spec.serverType,
        image: spec.image,
        labels,
        spec,
        expiresAt,
        maxAgents: this.maxAgents,
        idempotencyKey: key,
        idempotencyRoute: route,
        requestedBy: opts.requestedBy,
      });
      if (!bundle.created) {
        // A concurrent request with the same key won the race between our lookup and our insert.
        const replay = key ? await this.replayCreate(key, asked) : undefined;
        if (replay) return replay;
      }
      rows = { agent: bundle.agent, instance: bundle.instance, provisioningJob: bundle.job, operation: bundle.operation };
    } catch (err) {
      if (err instanceof AgentNameTakenError) {
        if (key) {
          // The same key may have created it a moment ago (a concurrent retry): that is a replay.
          const replay = await this.replayCreate(key, asked);
          if (replay) return replay;
        }
        const existing = await this.repos.agents.findLiveByName(input.name);
        throw new AgentNameTakenError(input.name, existing?.id ?? null);
      }
      throw this.keyConflict(err);
    }
    const queued = await this.outbox.deliver(rows.operation, { instanceId: rows.instance.id });
    this.logger.info(
      { agentId: rows.agent.id, operationId: rows.operation.id, provisioningJobId: rows.provisioningJob.id, jobId: rows.operation.queueJobId, queued },
      `[API] Agent ${rows.agent.id} created, provision queued`,
    );
    return { ...rows, created: true };
  }

  /**
   * A client's Idempotency-Key for a request this service does not make itself (a pool claim): its
   * stored slot (freed first when expired), and the operation it already names, if that operation
   * was made by the same route and type (IdempotencyKeyReuseError when it was not).
   */
  async keyedRequest(idempotency: IdempotencyKey | undefined, type: OperationType): Promise<{ slot: string | null; previous: Operation | null }> {
    const slot = await this.claimableSlot(idempotency);
    if (!slot) return { slot: null, previous: null };
    const previous = await this.repos.operations.findByIdempotencyKey(slot);
    if (previous) this.mustBeSameRequest(previous, { type, route: idempotency!.route });
    return { slot, previous };
  }

  /** ServerSpecRejectedError when the cloud's catalogue does not offer the spec (not checked without a catalogue). */
  async checkSpec(spec: Pick<AgentSpec, 'serverType' | 'location'>): Promise<void> {
    if (!this.catalogue) return;
    const problems = await this.catalogue.check(spec);
    if (problems.length > 0) throw new ServerSpecRejectedError(problems);
  }

  /**
   * A fresh instance for an agent in `error` (its last instance failed and was rolled back), made
   * from the same spec: a new provisioning job and provision operation, delivered like a create's.
   */
  async requestReprovision(agentId: string, opts: RequestOptions = {}): Promise<CreateAgentResult> {
    const agent = await this.mustGetAgent(agentId);
    const key = await this.claimableSlot(opts.idempotency);
    const route = opts.idempotency?.route ?? null;
    const previous = key ? await this.repos.operations.findByIdempotencyKey(key) : null;
    if (previous) this.mustBeSameRequest(previous, { type: 'provision', route, agentId });
    const latest = await this.repos.instances.findLatestByAgent(agentId);
    const spec: Pick<AgentSpec, 'serverType' | 'location' | 'image'> = agent.spec ?? {
      serverType: latest?.serverType ?? this.defaults.serverType,
      location: latest?.location ?? this.defaults.location,
      image: latest?.image ?? this.defaults.image,
    };
    if (!previous) {
      if (agent.status !== 'error') {
        throw new StateConflictError(`Agent ${agentId} is ${agent.status}; only an agent in error can be provisioned again`);
      }
      if (this.catalogue) {
        const problems = await this.catalogue.check(spec);
        if (problems.length > 0) throw new ServerSpecRejectedError(problems);
      }
    }
    let bundle;
    try {
      bundle = await this.ledger.acceptReprovision(agentId, {
        serverType: spec.serverType,
        location: spec.location,
        image: spec.image,
        idempotencyKey: key,
        idempotencyRoute: route,
        requestedBy: opts.requestedBy,
      });
    } catch (err) {
      if (err instanceof TransitionConflictError) {
        throw new StateConflictError(`Agent ${agentId} is no longer in error; only an agent in error can be provisioned again`);
      }
      if (err instanceof LiveInstanceExistsError) throw new StateConflictError(`Agent ${agentId} still has a live instance`);
      throw this.keyConflict(err);
    }
    const rows = { agent: bundle.agent, instance: bundle.instance, provisioningJob: bundle.job, operation: bundle.operation };
    if (!bundle.created) return { ...rows, created: false };
    const queued = await this.outbox.deliver(rows.operation, { instanceId: rows.instance.id });
    this.logger.info(
      { agentId, operationId: rows.operation.id, provisioningJobId: rows.provisioningJob.id, queued },
      `[API] Agent ${agentId} provisioned again`,
    );
    return { ...rows, created: true };
  }

  /**
   * Cancels an operation that is still queued: the operation becomes `cancelled` and its queue job is
   * removed. A job that runs anyway (it was already taken) finds the operation cancelled and does
   * nothing. A cancelled provision fails its instance and job and leaves the agent in `error`, from
   * where it can be provisioned again or destroyed.
   */
  async cancelOperation(operationId: string, opts: { requestedBy?: string } = {}): Promise<Operation> {
    const operation = await this.repos.operations.findById(operationId);
    if (!operation) throw new NotFoundError(`Operation ${operationId} not found`);
    if (operation.status !== 'queued') {
      throw new StateConflictError(`Operation ${operationId} is ${operation.status}; only a queued operation can be cancelled`);
    }
    const also: TransitionRequest[] = [];
    const reason = 'provision cancelled';
    if (operation.type === 'provision' && operation.provisioningJobId && operation.agentId) {
      const job = await this.repos.provisioningJobs.findById(operation.provisioningJobId);
      const agent = await this.repos.agents.findById(operation.agentId);
      if (job?.status === 'queued') {
        also.push(
          { entity: 'provisioning_job', id: job.id, from: ['queued'], to: 'failed', reason, operationId, actor: opts.requestedBy, patch: { error: reason, finishedAt: new Date() } },
          { entity: 'instance', id: job.instanceId, from: ['pending'], to: 'failed', reason, operationId, actor: opts.requestedBy, patch: { error: reason } },
        );
      }
      if (agent && (agent.status === 'draft' || agent.status === 'provisioning')) {
        also.push({ entity: 'agent', id: agent.id, from: [agent.status], to: 'error', reason, operationId, actor: opts.requestedBy });
      }
    }
    let cancelled: Operation;
    try {
      cancelled = await this.ledger.cancel(operationId, { actor: opts.requestedBy, reason: 'cancelled by request', also });
    } catch (err) {
      if (err instanceof TransitionConflictError) {
        const now = await this.repos.operations.findById(operationId);
        throw new StateConflictError(`Operation ${operationId} is ${now?.status ?? 'gone'}; only a queued operation can be cancelled`);
      }
      throw err;
    }
    if (operation.queueJobId && operation.type in this.queues) {
      const queue = this.queues[operation.type as keyof Queues];
      try {
        await withDeadline(queue.remove(operation.queueJobId), this.redisTimeoutMs, 'remove the cancelled job');
      } catch (err) {
        // Taken by a worker already, or Redis is away: that delivery finds the operation cancelled.
        this.logger.warn({ err, operationId, jobId: operation.queueJobId }, `[API] Could not remove the job of cancelled operation ${operationId}`);
      }
    }
    this.logger.info({ operationId, type: operation.type }, `[API] Operation ${operationId} cancelled`);
    return cancelled;
  }

  /** A command its descriptor declares (src/operations/types): `POST /v1/agents/:id/<type>`. */
  requestCommand(type: AgentCommandType, agentId: string, opts: RequestOptions = {}): Promise<CommandResult> {
    return this.requestAgentCommand(type, agentId, opts);
  }

  /**
   * At most one rollback operation per provisioning job, whoever asks (API, failed-provision
   * listener, sweep) and however often: the operation is found or created under `rollback:<pjId>`
   * and the queue job id is `rollback-<pjId>`.
   */
  async requestRollback(
    provisioningJobId: string,
    opts: RequestOptions & { trigger?: RollbackTrigger } = {},
  ): Promise<CommandResult> {
    const trigger = opts.trigger ?? 'api';
    // The rollback itself is keyed by its job (exactly once, whoever asks); a client's key only has
    // to name this same request.
    const clientKey = await this.claimableSlot(opts.idempotency);
    const previous = clientKey ? await this.repos.operations.findByIdempotencyKey(clientKey) : null;
    if (previous) this.mustBeSameRequest(previous, { type: 'rollback', route: opts.idempotency!.route, provisioningJobId });

    const key = rollbackKey(provisioningJobId);
    const existing = await this.repos.operations.findByIdempotencyKey(key);
    if (existing) return this.replay(existing, { type: 'rollback', route: null, provisioningJobId });

    const job = await this.repos.provisioningJobs.findById(provisioningJobId);
    if (!job) throw new NotFoundError(`Job ${provisioningJobId} not found`);
    if (job.status === 'succeeded') {
      throw new StateConflictError(`Job ${provisioningJobId} succeeded; destroy the agent instead of rolling back`);
    }
    if (job.status === 'rolled_back') throw new StateConflictError(`Job ${provisioningJobId} is already rolled back`);
    if (trigger === 'api' && job.status !== 'failed') {
      // A provision may have failed for good in the queue while its row still says queued/running
      // (the worker died); its operation row tells.
      const provision = await this.repos.operations.findProvisionOf(provisioningJobId);
      if (provision?.status !== 'failed') {
        throw new StateConflictError(
          `Job ${provisioningJobId} is ${job.status}; only a failed provision can be rolled back`,
        );
      }
    }

    // ON CONFLICT under the fixed key: the hook and the sweep may ask at the same moment from
    // different processes, and exactly one of them creates the operation.
    const { operation, created } = await this.ledger.acceptRollback({
      agentId: job.agentId,
      provisioningJobId,
      key,
      reason: `rollback requested (${trigger})`,
      requestedBy: trigger === 'api' ? opts.requestedBy : SYSTEM_ACTOR,
    });
    if (!created) return this.replay(operation, { type: 'rollback', route: null, provisioningJobId });

    const queued = await this.outbox.deliver(operation);
    this.logger.info(
      { agentId: job.agentId, operationId: operation.id, provisioningJobId, jobId: operation.queueJobId, trigger, queued },
      `[API] Rollback of job ${provisioningJobId} queued`,
    );
    return { operation, created: true };
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  private async requestAgentCommand(type: AgentCommand, agentId: string, opts: RequestOptions): Promise<CommandResult> {
    const key = opts.idempotency ? await this.claimableSlot(opts.idempotency) : null;
    const asked = { type, route: opts.idempotency?.route ?? null, agentId };
    if (key) {
      const previous = await this.repos.operations.findByIdempotencyKey(key);
      if (previous) return this.replay(previous, asked);
    }

    const result = await this.ledger.acceptAgentCommand(type, agentId, {
      idempotencyKey: key,
      idempotencyRoute: asked.route,
      requestedBy: opts.requestedBy,
      reason: opts.reason,
    });
    switch (result.outcome) {
      case 'created':
        break;
      case 'replay':
        // A request with the same key committed while this one waited for the agent's lock.
        return this.replay(result.operation, asked);
      case 'key_taken': {
        const existing = key ? await this.repos.operations.findByIdempotencyKey(key) : null;
        if (!existing) throw new Error(`operation insert returned no row for key ${key}`);
        return this.replay(existing, asked);
      }
      case 'agent_not_found':
        throw new NotFoundError(`Agent ${agentId} not found`);
      case 'agent_destroyed':
        throw new StateConflictError(`Agent ${agentId} is already destroyed`);
      case 'destroy_pending':
        throw new StateConflictError(`Agent ${agentId} is being destroyed (operation ${result.operationId})`);
      case 'same_pending':
        throw new StateConflictError(`A ${type} of agent ${agentId} is already in progress (operation ${result.operationId})`);
      case 'wrong_state': {
        const rule = commandOf(type);
        throw new StateConflictError(rule.from === 'any' ? `Agent ${agentId} cannot be ${type}ed` : rule.refusal);
      }
    }
    const { operation } = result;

    const queued = await this.outbox.deliver(operation);
    this.logger.info(
      { agentId, operationId: operation.id, jobId: operation.queueJobId, queued },
      `[API] ${type} of agent ${agentId} queued`,
    );
    return { operation, created: true };
  }

  /**
   * The answer to a repeated request: the operation it created first, provided the key is not being
   * reused for something else. Its delivery is the relay's business, not the client's.
   */
  private replay(operation: Operation, asked: AskedFor): CommandResult {
    this.mustBeSameRequest(operation, asked);
    return { operation, created: false };
  }

  /**
   * IdempotencyKeyReuseError (422) unless the operation a key names was made by the same request:
   * same route (method and template; operations written before routes were recorded compare by
   * type only), same type and same target.
   */
  private mustBeSameRequest(operation: Operation, asked: AskedFor): void {
    const sameRoute = asked.route === null || operation.idempotencyRoute === null || operation.idempotencyRoute === asked.route;
    if (!sameRoute) {
      throw new IdempotencyKeyReuseError(`Idempotency-Key was already used for ${operation.idempotencyRoute}, not ${asked.route}`);
    }
    const sameTarget =
      operation.type === asked.type &&
      (asked.agentId === undefined || operation.agentId === asked.agentId) &&
      (asked.provisioningJobId === undefined || operation.provisioningJobId === asked.provisioningJobId);
    if (!sameTarget) {
      throw new IdempotencyKeyReuseError(
        `Idempotency-Key was already used for a ${operation.type} request on another resource`,
      );
    }
  }

  /**
   * The slot of a client's key, freed first when the operation holding it is older than
   * IDEMPOTENCY_KEY_TTL_MS: the key then names nothing, and this request is a new one.
   */
  private async claimableSlot(idempotency: IdempotencyKey | undefined): Promise<string | null> {
    if (!idempotency) return null;
    const slot = keySlot(idempotency);
    await this.repos.operations.releaseExpiredKey(slot, IDEMPOTENCY_KEY_TTL_MS);
    return slot;
  }

  private async replayCreate(
    key: string,
    input: { name: string; spec: AgentSpec; labels: Record<string, string>; route: string | null },
  ): Promise<CreateAgentResult | undefined> {
    const operation = await this.repos.operations.findByIdempotencyKey(key);
    if (!operation) return undefined;
    const reused = () =>
      new IdempotencyKeyReuseError(`Idempotency-Key was already used for a ${operation.type} request with other parameters`);
    this.mustBeSameRequest(operation, { type: 'provision', route: input.route });
    if (!operation.agentId || !operation.provisioningJobId) throw reused();
    const provisioningJob = await this.repos.provisioningJobs.findById(operation.provisioningJobId);
    const agent = await this.repos.agents.findById(operation.agentId);
    const instance = provisioningJob && (await this.repos.instances.findById(provisioningJob.instanceId));
    if (!provisioningJob || !agent || !instance) throw new Error(`provision operation ${operation.id} is missing its rows`);
    const stored: AgentSpec = agent.spec ?? {
      serverType: instance.serverType,
      location: instance.location ?? input.spec.location,
      image: instance.image,
      sshKeys: input.spec.sshKeys,
      userData: null,
    };
    if (agent.name !== input.name || !sameJson(stored, input.spec) || !sameJson(agent.labels ?? {}, input.labels)) throw reused();
    return { agent, instance, operation, provisioningJob, created: false };
  }

  /** The repository's conflict names the stored key; the client hears about its own key only. */
  private keyConflict(err: unknown): unknown {
    if (err instanceof IdempotencyKeyConflictError) {
      return new IdempotencyKeyReuseError('Idempotency-Key was already used for a different request');
    }
    return err;
  }

  private async mustGetAgent(agentId: string): Promise<Agent> {
    const agent = await this.repos.agents.findById(agentId);
    if (!agent) throw new NotFoundError(`Agent ${agentId} not found`);
    return agent;
  }

}
