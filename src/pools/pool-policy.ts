import type { DataSource } from 'typeorm';
import type { RateLimitState } from '../clients/http';
import { withAdvisoryLock } from '../db/advisory-lock';
import type { Operation, Pool } from '../entities';
import type { Logger } from '../lib/logger';
import { PeriodicPass } from '../lib/periodic';
import type { Outbox } from '../operations/outbox';
import type { OperationsService } from '../operations/requests';
import type { PoolRepository, StandbyMember } from './pool.repository';
import type { PoolsService } from './pools.service';
import { targetAt } from './schedule';

/**
 * The pool policy: every POLICY_INTERVAL_SECONDS one process of the fleet (an advisory lock) keeps
 * each pool at the number of standbys its minReady and the schedule in force ask for, looking ahead
 * by the measured p95 time a standby takes to get ready so that a schedule's standbys are ready at
 * its time (and shrinking only once a schedule asking for fewer has come). Every action is an ordinary operation requested by `system` with its reason: "pool
 * refill" (a provision), "pool standby" (the stop or hibernate that puts a new standby to rest),
 * "pool shrink" (a destroy when fewer are wanted), "pool standby failed" (the destroy of a standby
 * whose provision failed). Refills and their rests spend at most REFILL_BUDGET_SHARE of the cloud's
 * request budget per hour (RateLimit-Limit, 3600 at Hetzner).
 */

export const REFILL_BUDGET_SHARE = 0.1;

/**
 * Hetzner requests each policy action costs, as the requests bench measures them (provision ≤ 4.23,
 * stop ≤ 1.3), rounded up; a hibernate is a shutdown, a snapshot and a delete.
 */
export const REQUESTS_PER_ACTION = { provision: 5, stop: 2, hibernate: 6 } as const;

/** Until a pool has its own record, a standby is expected to be ready this long after it is asked for. */
export const DEFAULT_READY_MS = 180_000;

const POOL_POLICY_LOCK_KEY = 0x7466_706c; // "tfpl"
const HOUR_MS = 3_600_000;
const REFILL_REASONS = ['pool refill', 'pool standby'] as const;

export interface PoolPassResult {
  /** Another process held the lock: this one did nothing. */
  skipped: boolean;
  refills: number;
  rests: number;
  destroys: number;
  /** Refills the budget held back this pass. */
  deferred: number;
  /** What the hour's refills may still spend, in requests, after this pass. */
  budgetLeft: number;
}

export interface PoolPolicyDeps {
  dataSource: DataSource;
  pools: PoolRepository;
  service: Pick<PoolsService, 'refill'>;
  operations: Pick<OperationsService, 'requestCommand'>;
  outbox: Pick<Outbox, 'deliver'>;
  /** The Hetzner request budget an hour (RateLimit-Limit) refills are measured against: with several projects, the smallest one's. */
  requestBudget: () => Pick<RateLimitState, 'limit'>;
  logger: Logger;
  intervalMs: number;
  /** Time as the schedules read it (tests move it across a daylight-saving change). */
  now?: () => Date;
}

export class PoolPolicy extends PeriodicPass<PoolPassResult> {
  private readonly now: () => Date;

  constructor(private readonly deps: PoolPolicyDeps) {
    super(deps.intervalMs);
    this.now = deps.now ?? (() => new Date());
  }

  protected async pass(): Promise<PoolPassResult> {
    const outcome = await withAdvisoryLock(this.deps.dataSource, POOL_POLICY_LOCK_KEY, () => this.keepAll());
    return outcome.locked ? outcome.value : { skipped: true, refills: 0, rests: 0, destroys: 0, deferred: 0, budgetLeft: 0 };
  }

  protected passFailed(err: unknown): void {
    this.deps.logger.error({ err }, '[Pools] Pool policy pass failed; trying again next interval');
  }

  /** The hour's refill budget in requests, and what the policy's refills spent of it in the last hour. */
  async budget(now: Date): Promise<{ allowed: number; spent: number }> {
    const limit = this.deps.requestBudget().limit ?? 3600;
    const spentBy = await this.deps.pools.policyRequestsSince(REFILL_REASONS, new Date(now.getTime() - HOUR_MS));
    const spent =
      (spentBy.get('provision') ?? 0) * REQUESTS_PER_ACTION.provision +
      (spentBy.get('stop') ?? 0) * REQUESTS_PER_ACTION.stop +
      (spentBy.get('hibernate') ?? 0) * REQUESTS_PER_ACTION.hibernate;
    return { allowed: Math.floor(limit * REFILL_BUDGET_SHARE), spent };
  }

  /** How long a standby of the pool takes from its request to ready (p95 of its record; the fleet's, then a default, without). */
  async readyLeadMs(pool: Pool): Promise<number> {
    const provision = (await this.deps.pools.durationP95('provision', pool)) ?? (await this.deps.pools.durationP95('provision', null)) ?? DEFAULT_READY_MS;
    if (pool.standby === 'running') return provision;
    const rest = (await this.deps.pools.durationP95(pool.standby === 'stopped' ? 'stop' : 'hibernate', pool)) ?? 0;
    return provision + rest;
  }

  private async keepAll(): Promise<PoolPassResult> {
    const now = this.now();
    const result: PoolPassResult = { skipped: false, refills: 0, rests: 0, destroys: 0, deferred: 0, budgetLeft: 0 };
    const { allowed, spent } = await this.budget(now);
    await this.resumeClaims();
    const pools = await Promise.all((await this.deps.pools.list()).map(async (pool) => ({ pool, members: await this.deps.pools.standbys(pool) })));
    // The rest a standby of a stopped or hibernated pool still has ahead was paid for with its refill.
    const reserved = pools.reduce((sum, { pool, members }) => sum + members.filter((m) => m.status !== 'error' && !m.ready).length * restCost(pool), 0);
    let left = allowed - spent - reserved;
    for (const { pool, members } of pools) {
      try {
        left = await this.keep(pool, members, now, left, result);
      } catch (err) {
        // One pool's trouble (its spec refused, the quota reached) does not hold the others back.
        this.deps.logger.warn({ err, pool: pool.name }, `[Pools] Could not keep pool ${pool.name} stocked this pass`);
      }
    }
    result.budgetLeft = left;
    return result;
  }

  private async keep(pool: Pool, members: StandbyMember[], now: Date, budgetLeft: number, result: PoolPassResult): Promise<number> {
    let left = budgetLeft;
    const log = this.deps.logger.child({ pool: pool.name });
    // Up early by the time a standby takes to get ready; down only when the time has come.
    const lead = await this.readyLeadMs(pool);
    const target = Math.max(targetAt(pool, now), targetAt(pool, new Date(now.getTime() + lead)));

    const failed = members.filter((m) => m.status === 'error' && !m.busy);
    for (const m of failed) await this.act(pool, m.agentId, 'destroy', 'pool standby failed', result);
    const live = members.filter((m) => m.status !== 'error');

    // New standbys of a stopped or hibernated pool are put to rest once they are up (their refill
    // reserved what that costs).
    if (pool.standby !== 'running') {
      const rest = pool.standby === 'stopped' ? 'stop' : 'hibernate';
      for (const m of live.filter((x) => canRest(x, pool))) {
        if (await this.act(pool, m.agentId, rest, 'pool standby', result)) result.rests++;
      }
    }

    if (live.length < target) {
      const cost = REQUESTS_PER_ACTION.provision + restCost(pool);
      const wanted = target - live.length;
      const affordable = Math.max(0, Math.min(wanted, Math.floor(left / cost)));
      for (let i = 0; i < affordable; i++) {
        await this.deps.service.refill(pool);
        left -= cost;
        result.refills++;
      }
      if (affordable < wanted) {
        result.deferred += wanted - affordable;
        log.warn({ wanted, affordable, budgetLeft: left }, `[Pools] Pool ${pool.name} refill held back by the request budget (${wanted - affordable} of ${wanted})`);
      } else {
        log.info({ refills: affordable, target }, `[Pools] Pool ${pool.name}: ${affordable} standbys requested (target ${target})`);
      }
    } else if (live.length > target) {
      // Fewer wanted (a schedule ended, minReady lowered): the ones furthest from ready go first.
      const victims = [...live].sort((a, b) => Number(a.ready) - Number(b.ready) || b.createdAt.getTime() - a.createdAt.getTime()).slice(0, live.length - target);
      for (const m of victims) await this.act(pool, m.agentId, 'destroy', 'pool shrink', result);
    }
    return left;
  }

  /** One action on a standby, if it still is one (a claim may have taken it since it was read). */
  private async act(pool: Pool, agentId: string, type: 'stop' | 'hibernate' | 'destroy', reason: string, result: PoolPassResult): Promise<Operation | null> {
    const operation = await this.deps.pools.requestForStandby(pool, agentId, type, reason);
    if (!operation) return null;
    if (type === 'destroy') result.destroys++;
    await this.deps.outbox.deliver(operation);
    return operation;
  }

  /** A claim whose start or wake was never requested (its process died in between) gets it now. */
  private async resumeClaims(): Promise<void> {
    for (const c of await this.deps.pools.claimsWaitingForPower()) {
      try {
        await this.deps.operations.requestCommand(c.type, c.agentId, { reason: `claim from pool ${c.pool}: ${c.type} resumed` });
      } catch (err) {
        this.deps.logger.warn({ err, agentId: c.agentId }, `[Pools] Could not resume the ${c.type} of a claimed agent`);
      }
    }
  }
}

/** What putting a new standby of the pool to rest costs (nothing for a pool of running standbys). */
function restCost(pool: Pool): number {
  return pool.standby === 'stopped' ? REQUESTS_PER_ACTION.stop : pool.standby === 'hibernated' ? REQUESTS_PER_ACTION.hibernate : 0;
}

/** A standby that is up and should now be put to rest (stopped or hibernated). */
function canRest(m: StandbyMember, pool: Pool): boolean {
  if (m.busy) return false;
  if (pool.standby === 'stopped') return m.status === 'active' && m.instanceStatus === 'running';
  return (m.status === 'active' && m.instanceStatus === 'running') || (m.status === 'paused' && m.instanceStatus === 'stopped');
}
