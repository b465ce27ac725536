import type { DataSource, EntityManager } from 'typeorm';
import { In } from 'typeorm';
import { Agent, type AgentSpec, type AgentStatus, Instance, LIVE_AGENT_PREDICATE, Operation, type PoolRole, ProvisioningJob } from '../entities';
import {
  AgentNameTakenError,
  AgentQuotaExceededError,
  IdempotencyKeyConflictError,
  isUniqueViolation,
  LiveInstanceExistsError,
  RecordNotFoundError,
} from './errors';
import { insertOperation } from './operation.repository';
import { type Db, insertReturning, managerOf, recordEvent, transition } from './transitions';
import { isUuid } from './uuid';

export interface InstanceSpec {
  serverType: string;
  image: string;
  location?: string | null;
  serverName?: string | null;
  tailscaleHostname?: string | null;
}

/** The provision operation's own columns, chosen by the caller so the job id is stored in the INSERT. */
export interface ProvisionRequest {
  idempotencyKey?: string | null;
  /** Method and route template a client's key was sent to. */
  idempotencyRoute?: string | null;
  operationId?: string;
  queueJobId?: string | null;
  /** Who asked (the actor); `system` when not given. */
  requestedBy?: string;
}

export interface NewAgentWithProvision extends InstanceSpec, ProvisionRequest {
  name: string;
  /** The application's labels (validated by the API). */
  labels?: Record<string, string>;
  /** The full spec, defaults filled in; stored on the agent for every later instance. */
  spec?: AgentSpec | null;
  /** When the expiry policy destroys it (src/policy); null: never. */
  expiresAt?: Date | null;
  /** MAX_AGENTS: creating one more live agent than this fails with AgentQuotaExceededError. */
  maxAgents?: number | null;
  /** The pool the agent is made for, and its role there. */
  pool?: { id: string; role: PoolRole };
  /** Audit reason of the provision's creation event; default "provision requested". */
  reason?: string;
  /** Why tailfleet asks for the provision itself (a policy: "pool refill"), written on the operation. */
  policyReason?: string;
}

// Creates that count live agents against MAX_AGENTS take this transaction-scoped lock, so two of
// them never both see room for one more.
const AGENT_QUOTA_LOCK = 0x7466_0001;
const LIVE_NAME_INDEX = 'uq_agents_live_name';

export interface ProvisionAgainInput extends InstanceSpec, ProvisionRequest {}

export interface ProvisionBundle {
  agent: Agent;
  instance: Instance;
  job: ProvisioningJob;
  operation: Operation;
  /** false: the idempotency key named an earlier identical request, whose rows are returned. */
  created: boolean;
}

const IDEMPOTENCY_INDEX = 'uq_operations_idempotency_key';

export class AgentRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  async findById(id: string, db: Db = this.dataSource): Promise<Agent | null> {
    if (!isUuid(id)) return null;
    return managerOf(db).findOne(Agent, { where: { id } });
  }

  /** The agents with these ids, read in chunks so any number of ids fits one query each. */
  async findByIds(ids: readonly string[], db: Db = this.dataSource): Promise<Map<string, Agent>> {
    const agents = new Map<string, Agent>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += 1000) {
      const chunk = await managerOf(db).find(Agent, { where: { id: In(unique.slice(i, i + 1000)) } });
      for (const a of chunk) agents.set(a.id, a);
    }
    return agents;
  }

  /** The agent that is not destroyed with this name, if any (names are unique among those). */
  findLiveByName(name: string, db: Db = this.dataSource): Promise<Agent | null> {
    return managerOf(db)
      .createQueryBuilder(Agent, 'a')
      .where('a.name = :name', { name })
      .andWhere(`a.status <> 'destroyed'`)
      .getOne();
  }

  /** Newest first. */
  list(
    options: { limit?: number; offset?: number; statuses?: readonly AgentStatus[] } = {},
    db: Db = this.dataSource,
  ): Promise<Agent[]> {
    return managerOf(db).find(Agent, {
      where: options.statuses ? { status: In([...options.statuses]) } : {},
      order: { createdAt: 'DESC', id: 'DESC' },
      take: options.limit ?? 50,
      skip: options.offset ?? 0,
    });
  }

  /**
   * POST /v1/agents in one transaction: agent (draft), instance (pending), provisioning job (queued)
   * and provision operation (queued), each with its creation event. The caller enqueues the BullMQ
   * job afterwards and stores its id with OperationRepository.update(…, { queueJobId }).
   * A repeated idempotency key returns the first request's rows with created: false.
   */
  async createWithProvision(input: NewAgentWithProvision, db: Db = this.dataSource): Promise<ProvisionBundle> {
    return this.idempotent(input.idempotencyKey, null, db, async (manager) => {
      if (input.maxAgents !== undefined && input.maxAgents !== null) {
        await manager.query('SELECT pg_advisory_xact_lock($1)', [AGENT_QUOTA_LOCK]);
        const live = await manager.createQueryBuilder(Agent, 'a').where(`a.${LIVE_AGENT_PREDICATE}`).getCount();
        if (live >= input.maxAgents) throw new AgentQuotaExceededError(input.maxAgents);
      }
      let agent: Agent;
      try {
        agent = await insertReturning(manager, Agent, {
          name: input.name,
          labels: input.labels ?? {},
          spec: input.spec ?? null,
          expiresAt: input.expiresAt ?? null,
          ...(input.pool ? { poolId: input.pool.id, poolRole: input.pool.role, claimedAt: input.pool.role === 'claimed' ? new Date() : null } : {}),
        });
      } catch (err) {
        if (isUniqueViolation(err, LIVE_NAME_INDEX)) throw new AgentNameTakenError(input.name);
        throw err;
      }
      await recordEvent(manager, {
        entityType: 'agent',
        entityId: agent.id,
        agentId: agent.id,
        fromStatus: null,
        toStatus: agent.status,
        reason: 'agent created',
        actor: input.requestedBy,
      });
      return this.insertProvision(manager, agent, input);
    });
  }

  /**
   * Provisions an agent in `error` again (its last instance failed and was rolled back): agent
   * error → provisioning, plus a new pending instance, job and operation. Throws
   * TransitionConflictError when the agent is not in error, LiveInstanceExistsError if it still has
   * a live instance.
   */
  async provisionAgain(agentId: string, input: ProvisionAgainInput, db: Db = this.dataSource): Promise<ProvisionBundle> {
    if (!isUuid(agentId)) throw new RecordNotFoundError('agent', agentId);
    return this.idempotent(input.idempotencyKey, agentId, db, async (manager) => {
      const existing = await manager.findOne(Agent, { where: { id: agentId } });
      if (!existing) throw new RecordNotFoundError('agent', agentId);
      const bundle = await this.insertProvision(manager, existing, input);
      const { row: agent } = await transition(manager, {
        entity: 'agent',
        id: agentId,
        from: ['error'],
        to: 'provisioning',
        reason: 'provision requested again',
        operationId: bundle.operation.id,
        actor: input.requestedBy,
      });
      return { ...bundle, agent };
    });
  }

  private async insertProvision(
    manager: EntityManager,
    agent: Agent,
    input: InstanceSpec & ProvisionRequest & { reason?: string; policyReason?: string },
  ): Promise<ProvisionBundle> {
    let instance: Instance;
    try {
      instance = await insertReturning(manager, Instance, {
        agentId: agent.id,
        serverType: input.serverType,
        image: input.image,
        location: input.location ?? null,
        serverName: input.serverName ?? null,
        tailscaleHostname: input.tailscaleHostname ?? null,
      });
    } catch (err) {
      if (isUniqueViolation(err, 'uq_instances_live_agent')) throw new LiveInstanceExistsError(agent.id);
      throw err;
    }
    const job = await insertReturning(manager, ProvisioningJob, { agentId: agent.id, instanceId: instance.id });
    const { operation, created } = await insertOperation(manager, {
      type: 'provision',
      agentId: agent.id,
      provisioningJobId: job.id,
      idempotencyKey: input.idempotencyKey ?? null,
      idempotencyRoute: input.idempotencyRoute ?? null,
      id: input.operationId,
      queueJobId: input.queueJobId ?? null,
      requestedBy: input.requestedBy,
      reason: input.reason,
      policyReason: input.policyReason,
    });
    if (!created) {
      // The key was taken between our lookup and this insert; undo and let idempotent() answer.
      throw new IdempotencyRace();
    }
    await recordEvent(manager, {
      entityType: 'instance',
      entityId: instance.id,
      agentId: agent.id,
      fromStatus: null,
      toStatus: instance.status,
      reason: 'instance created',
      operationId: operation.id,
      actor: input.requestedBy,
    });
    await recordEvent(manager, {
      entityType: 'provisioning_job',
      entityId: job.id,
      agentId: agent.id,
      fromStatus: null,
      toStatus: job.status,
      reason: 'provisioning job created',
      operationId: operation.id,
      actor: input.requestedBy,
    });
    return { agent, instance, job, operation, created: true };
  }

  /**
   * Runs create in its own transaction (a savepoint inside the caller's), unless the idempotency key
   * already names a provision operation, in which case that request's rows are returned.
   */
  private async idempotent(
    key: string | null | undefined,
    agentId: string | null,
    db: Db,
    create: (manager: EntityManager) => Promise<ProvisionBundle>,
  ): Promise<ProvisionBundle> {
    const manager = managerOf(db);
    if (key) {
      const found = await this.existingBundle(manager, key, agentId);
      if (found) return found;
    }
    try {
      return await manager.transaction(create);
    } catch (err) {
      // A concurrent request with the same key committed first: answer with its rows (or, if the key
      // really names another request, existingBundle throws IdempotencyKeyConflictError).
      // Its agent's name may collide first: the same key's request holds the name.
      const raced =
        err instanceof IdempotencyRace ||
        err instanceof AgentNameTakenError ||
        err instanceof IdempotencyKeyConflictError ||
        isUniqueViolation(err, IDEMPOTENCY_INDEX);
      if (key && raced) {
        const found = await this.existingBundle(manager, key, agentId);
        if (found) return found;
      }
      throw err;
    }
  }

  private async existingBundle(
    manager: EntityManager,
    key: string,
    agentId: string | null,
  ): Promise<ProvisionBundle | null> {
    const operation = await manager.findOne(Operation, { where: { idempotencyKey: key } });
    if (!operation) return null;
    if (
      operation.type !== 'provision' ||
      !operation.provisioningJobId ||
      !operation.agentId ||
      (agentId !== null && operation.agentId !== agentId)
    ) {
      throw new IdempotencyKeyConflictError(key, operation.id);
    }
    const job = await manager.findOneOrFail(ProvisioningJob, { where: { id: operation.provisioningJobId } });
    const agent = await manager.findOneOrFail(Agent, { where: { id: operation.agentId } });
    const instance = await manager.findOneOrFail(Instance, { where: { id: job.instanceId } });
    return { agent, instance, job, operation, created: false };
  }
}

class IdempotencyRace extends Error {}
