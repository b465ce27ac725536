import { randomBytes, randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import type { AgentRepository } from '../db/agent.repository';
import { SYSTEM_ACTOR, type Agent, type Operation, type Pool, type PoolSchedule, type PoolSpec, type StandbyMode } from '../entities';
import { InvalidInputError, NotFoundError, StateConflictError } from '../errors';
import type { Logger } from '../lib/logger';
import type { Outbox } from '../operations/outbox';
import { IdempotencyKeyReuseError, type IdempotencyKey, type OperationsDefaults, type OperationsService } from '../operations/requests';
import { claimArgs } from '../operations/types/claim';
import { jobIds } from '../queues/queues';
import { ClaimKeyTakenError, type ClaimKey, type ClaimSource, type PoolCounts, type PoolRepository } from './pool.repository';

/**
 * Pools of standby agents made from one spec, and the claim that hands one over. The pool policy
 * (pool-policy.ts) keeps each pool stocked; this is what the API asks of them.
 */

export interface PoolInput {
  name: string;
  spec?: Partial<PoolSpec>;
  minReady: number;
  standby: StandbyMode;
  maxSize?: number | null;
  schedules?: PoolSchedule[];
}

export type PoolPatch = Partial<Omit<PoolInput, 'name'>>;

export interface ClaimInput {
  name?: string;
  labels?: Record<string, string>;
  leaseSeconds?: number;
}

export interface ClaimResult {
  agent: Agent;
  /** The claim operation. */
  operation: Operation;
  from: ClaimSource;
  /** What else the claim asked for: the start, wake or provision that makes the agent ready. */
  preparing: Operation | null;
  /** false: an earlier request with the same Idempotency-Key made this claim, which is the answer. */
  created: boolean;
}

export interface PoolsDeps {
  dataSource: DataSource;
  pools: PoolRepository;
  agents: Pick<AgentRepository, 'createWithProvision' | 'findById'>;
  operations: Pick<OperationsService, 'checkSpec' | 'requestCommand' | 'maxAgents' | 'keyedRequest'>;
  outbox: Pick<Outbox, 'deliver'>;
  defaults: OperationsDefaults;
  logger: Logger;
}

/** A pool's own answer to "too many": minReady and each schedule's within maxSize. */
export class PoolSizeError extends InvalidInputError {
  override readonly code = 'pool_size';
}

const memberName = (pool: string) => `${pool}-${randomBytes(4).toString('hex')}`;

export class PoolsService {
  constructor(private readonly deps: PoolsDeps) {}

  async create(input: PoolInput): Promise<Pool> {
    const spec: PoolSpec = {
      serverType: input.spec?.serverType ?? this.deps.defaults.serverType,
      location: input.spec?.location ?? this.deps.defaults.location,
      image: input.spec?.image ?? this.deps.defaults.image,
      sshKeys: input.spec?.sshKeys ?? this.deps.defaults.sshKeys ?? [],
      userData: input.spec?.userData ?? null,
      // The activity reporter (with TAILFLEET_PUBLIC_URL): a standby is then ready for a claim once its own cloud-init is done.
      reporter: this.deps.defaults.reporter === true && input.spec?.reporter !== false,
      labels: input.spec?.labels ?? {},
    };
    const pool = { name: input.name, spec, minReady: input.minReady, standby: input.standby, maxSize: input.maxSize ?? null, schedules: input.schedules ?? [] };
    checkSizes(pool);
    await this.deps.operations.checkSpec(spec);
    const created = await this.deps.pools.create(pool);
    this.deps.logger.info({ pool: created.name }, `[Pools] Pool ${created.name} created (minReady ${created.minReady}, ${created.standby} standbys)`);
    return created;
  }

  async list(): Promise<Array<{ pool: Pool; counts: PoolCounts }>> {
    const pools = await this.deps.pools.list();
    const counts = await this.deps.pools.counts(pools);
    return pools.map((pool) => ({ pool, counts: counts.get(pool.id)! }));
  }

  async get(name: string): Promise<{ pool: Pool; counts: PoolCounts }> {
    const pool = await this.mustGet(name);
    return { pool, counts: (await this.deps.pools.counts([pool])).get(pool.id)! };
  }

  /** Changes what the pool keeps; a new spec applies to the standbys made from now on. */
  async update(name: string, patch: PoolPatch): Promise<Pool> {
    const pool = await this.mustGet(name);
    const spec = patch.spec ? { ...pool.spec, ...patch.spec } : pool.spec;
    const next = {
      spec,
      minReady: patch.minReady ?? pool.minReady,
      standby: patch.standby ?? pool.standby,
      maxSize: patch.maxSize === undefined ? pool.maxSize : patch.maxSize,
      schedules: patch.schedules ?? pool.schedules,
    };
    checkSizes(next);
    if (patch.spec) await this.deps.operations.checkSpec(spec);
    return this.deps.pools.update(pool, next);
  }

  /** Deletes the pool and destroys its standbys; claimed agents are left as they are. */
  async delete(name: string, opts: { requestedBy?: string } = {}): Promise<{ pool: Pool; destroying: Operation[] }> {
    const pool = await this.mustGet(name);
    const destroying = await this.deps.pools.delete(pool, opts);
    for (const operation of destroying) await this.deps.outbox.deliver(operation);
    this.deps.logger.info({ pool: pool.name, standbys: destroying.length }, `[Pools] Pool ${pool.name} deleted; ${destroying.length} standbys being destroyed`);
    return { pool, destroying };
  }

  /**
   * Hands a standby over: the best one there is (running, else stopped, else hibernated), or a new
   * agent made from the pool's spec when none can be claimed. The claim operation labels its server
   * once the agent is ready; a stopped standby is started and a hibernated one woken by an operation
   * requested right after the claim is committed (the pool policy requests it should this process
   * die in between). A repeated Idempotency-Key answers with the claim it made.
   */
  async claim(name: string, input: ClaimInput, opts: { requestedBy?: string; idempotency?: IdempotencyKey } = {}): Promise<ClaimResult> {
    const pool = await this.mustGet(name);
    const { slot, previous } = await this.deps.operations.keyedRequest(opts.idempotency, 'claim');
    if (previous) return this.replay(previous, pool);
    const key: ClaimKey | undefined = slot ? { slot, route: opts.idempotency!.route } : undefined;
    try {
      return await this.claimWith(pool, input, opts.requestedBy, key);
    } catch (err) {
      if (!(err instanceof ClaimKeyTakenError) || !slot) throw err;
      const winner = (await this.deps.operations.keyedRequest(opts.idempotency, 'claim')).previous;
      if (!winner) throw err;
      return this.replay(winner, pool);
    }
  }

  /** The answer to a repeated claim: the claim its key made first, if that was a claim on this pool. */
  private async replay(previous: Operation, pool: Pool): Promise<ClaimResult> {
    const args = claimArgs.safeParse(previous.args);
    if (!args.success || args.data.pool !== pool.name || !previous.agentId) {
      throw new IdempotencyKeyReuseError('Idempotency-Key was already used for a claim on another pool');
    }
    const agent = await this.deps.agents.findById(previous.agentId);
    if (!agent) throw new NotFoundError(`Agent ${previous.agentId} not found`);
    return { agent, operation: previous, from: args.data.from, preparing: null, created: false };
  }

  private async claimWith(pool: Pool, input: ClaimInput, requestedBy: string | undefined, key: ClaimKey | undefined): Promise<ClaimResult> {
    const leaseSeconds = input.leaseSeconds ?? null;
    const taken = await this.deps.pools.claimStandby(pool, { name: input.name, labels: input.labels, leaseSeconds, requestedBy, key });
    if (taken) {
      let preparing: Operation | null = null;
      if (taken.from !== 'running') {
        // The claim's own transaction has committed; the agent is claimed, so nothing else asks for it.
        const type = taken.from === 'stopped' ? 'start' : 'wake';
        try {
          const { operation } = await this.deps.operations.requestCommand(type, taken.agent.id, {
            requestedBy,
            reason: `claim from pool ${pool.name}: ${taken.from} standby`,
          });
          preparing = operation;
        } catch (err) {
          // The pool policy resumed it first (it requests what a claim's process did not live to).
          if (!(err instanceof StateConflictError)) throw err;
        }
      }
      await this.deps.outbox.deliver(taken.operation);
      this.deps.logger.info({ pool: pool.name, agentId: taken.agent.id, from: taken.from }, `[Pools] ${taken.from} standby of pool ${pool.name} claimed`);
      return { agent: taken.agent, operation: taken.operation, from: taken.from, preparing, created: true };
    }
    return this.claimCold(pool, input, leaseSeconds, requestedBy, key);
  }

  /** A standby for the pool, requested by the pool policy. */
  async refill(pool: Pool): Promise<Operation> {
    const bundle = await this.provision(pool, { name: memberName(pool.name), labels: pool.spec.labels, role: 'standby', requestedBy: SYSTEM_ACTOR, policyReason: 'pool refill' });
    await this.deps.outbox.deliver(bundle.operation, { instanceId: bundle.instance.id });
    return bundle.operation;
  }

  private async claimCold(pool: Pool, input: ClaimInput, leaseSeconds: number | null, requestedBy: string | undefined, key: ClaimKey | undefined): Promise<ClaimResult> {
    const result = await this.deps.dataSource.transaction(async (m) => {
      const bundle = await this.provision(
        pool,
        {
          name: input.name ?? memberName(pool.name),
          labels: input.labels ?? pool.spec.labels,
          role: 'claimed',
          requestedBy,
          reason: `claim from pool ${pool.name}: no standby ready`,
        },
        m,
      );
      const operation = await this.deps.pools.insertClaim(m, bundle.agent.id, { pool: pool.name, from: 'provision', labels: bundle.agent.labels, leaseSeconds }, requestedBy, key);
      return { bundle, operation };
    });
    await this.deps.outbox.deliver(result.bundle.operation, { instanceId: result.bundle.instance.id });
    await this.deps.outbox.deliver(result.operation);
    this.deps.logger.info({ pool: pool.name, agentId: result.bundle.agent.id }, `[Pools] No standby of pool ${pool.name} ready; claim provisions a new agent`);
    return { agent: result.bundle.agent, operation: result.operation, from: 'provision', preparing: result.bundle.operation, created: true };
  }

  private provision(
    pool: Pool,
    o: { name: string; labels: Record<string, string>; role: 'standby' | 'claimed'; requestedBy?: string; reason?: string; policyReason?: string },
    db: DataSource | Parameters<AgentRepository['createWithProvision']>[1] = this.deps.dataSource,
  ) {
    const operationId = randomUUID();
    const { labels: _labels, ...spec } = pool.spec;
    return this.deps.agents.createWithProvision(
      {
        name: o.name,
        labels: o.labels,
        spec,
        serverType: spec.serverType,
        location: spec.location,
        image: spec.image,
        maxAgents: this.deps.operations.maxAgents,
        pool: { id: pool.id, role: o.role },
        reason: o.reason,
        policyReason: o.policyReason,
        requestedBy: o.requestedBy,
        operationId,
        queueJobId: jobIds.operation(operationId),
      },
      db,
    );
  }

  private async mustGet(name: string): Promise<Pool> {
    const pool = await this.deps.pools.findByName(name);
    if (!pool) throw new NotFoundError(`Pool ${name} not found`);
    return pool;
  }
}

function checkSizes(pool: { minReady: number; maxSize: number | null; schedules: PoolSchedule[] }): void {
  if (pool.maxSize === null) return;
  if (pool.minReady > pool.maxSize) throw new PoolSizeError(`minReady (${pool.minReady}) is more than maxSize (${pool.maxSize})`);
  const over = pool.schedules.find((s) => s.minReady > pool.maxSize!);
  if (over) throw new PoolSizeError(`the schedule "${over.cron}" asks for ${over.minReady} standbys, more than maxSize (${pool.maxSize})`);
}

