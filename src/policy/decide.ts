import type { AgentStatus, IdleStep } from '../entities';
import { lastActivityOf, type ActivityMoments, type LastActivity } from '../db/activity.repository';
import { describeSeconds } from './idle-ladder';

/**
 * The policies' decisions, made from one agent's state at one moment: pure, so the loop, its tests
 * and the bench (with a clock of its own) share them.
 */

/** What the policy loop reads of an agent. */
export interface PolicyAgent {
  id: string;
  status: AgentStatus;
  idle: IdleStep[] | null;
  createdAt: Date;
  /** When its status last changed (how long a paused agent has been paused). */
  updatedAt: Date;
  /** Its expiry (the fleet's maximum lifetime already applied); null: none. */
  expiresAt: Date | null;
  expiryWarnedFor: Date | null;
  /** Its live instance's status; null: none. */
  instanceStatus: string | null;
  instanceStartedAt: Date | null;
  moments: ActivityMoments;
  /** A live lease holds it. */
  leased: boolean;
  /** A pool's standby: its pool's policy decides how it waits (src/pools), so it is never auto-hibernated. */
  poolStandby?: boolean;
  /** An operation of it is queued or running: someone's request goes first. */
  operationPending: boolean;
  /**
   * The policies' own requests (by `system`) for it that failed since the last one that succeeded:
   * how many, and when the last one ended. None: null or absent.
   */
  policyFailures?: { count: number; lastAt: Date } | null;
}

/**
 * After a policy's request failed, the policies leave the agent alone for a while before asking
 * again, doubling each time: an agent whose destroy keeps failing (a cloud refusing, a credential
 * revoked) is not asked every pass, each time spending cloud requests and writing a failed
 * operation. The failures are in the operation list, each with its error and webhook.
 */
export const POLICY_RETRY_BACKOFF = { firstMs: 60_000, maxMs: 3_600_000 };

/** When a policy may act on the agent again after its failures; null: at once. */
export function policyRetryAt(failures: PolicyAgent['policyFailures']): Date | null {
  if (!failures || failures.count <= 0) return null;
  const wait = Math.min(POLICY_RETRY_BACKOFF.maxMs, POLICY_RETRY_BACKOFF.firstMs * 2 ** Math.min(failures.count - 1, 30));
  return new Date(failures.lastAt.getTime() + wait);
}

export interface PolicySettings {
  expiryWarningMs: number;
  /** AUTO_HIBERNATE_AFTER_HOURS: a paused agent with no ladder of its own is hibernated after this; null: never. */
  autoHibernateAfterMs: number | null;
}

export type PolicyAction = 'stop' | 'hibernate' | 'destroy';

export type PolicyDecision =
  | { kind: 'warn'; agentId: string; expiresAt: Date }
  | {
      kind: 'act';
      agentId: string;
      action: PolicyAction;
      cause: 'idle' | 'expired' | 'paused';
      /** The operation's reason. */
      reason: string;
      /** The moment the action became due (its lateness is measured from here). */
      dueAt: Date;
    };

// Where an action leaves an instance, and from which live statuses it is taken.
const APPLIES_FROM: Record<PolicyAction, ReadonlySet<string | null>> = {
  stop: new Set(['running']),
  hibernate: new Set(['running', 'stopped']),
  destroy: new Set(['running', 'stopped', 'hibernated', null]),
};

// The agent statuses an idle ladder applies to (a provision or a failure is nobody's idleness).
const IDLE_STATUSES: ReadonlySet<AgentStatus> = new Set(['active', 'paused', 'hibernated']);

/** The moment idleness counts from: the last activity, else the instance's start, else the creation. */
export function idleSince(agent: PolicyAgent, now: Date): { at: Date; last: LastActivity | null } {
  const last = lastActivityOf(agent.moments, now);
  let at = agent.createdAt;
  if (agent.instanceStartedAt && agent.instanceStartedAt > at) at = agent.instanceStartedAt;
  if (last && last.at > at) at = last.at;
  return { at, last };
}

/** The deepest rung whose threshold has passed, with the moment it became due. */
export function dueStep(ladder: readonly IdleStep[], since: Date, now: Date): { step: IdleStep; dueAt: Date } | null {
  let due: { step: IdleStep; dueAt: Date } | null = null;
  for (const step of ladder) {
    const dueAt = new Date(since.getTime() + step.afterSeconds * 1000);
    if (dueAt.getTime() <= now.getTime()) due = { step, dueAt };
  }
  return due;
}

export function decide(agent: PolicyAgent, now: Date, settings: PolicySettings): PolicyDecision[] {
  if (agent.status === 'destroyed') return [];
  const out: PolicyDecision[] = [];
  const expiresAt = agent.expiresAt;
  if (expiresAt && now.getTime() >= expiresAt.getTime() - settings.expiryWarningMs && agent.expiryWarnedFor?.getTime() !== expiresAt.getTime()) {
    out.push({ kind: 'warn', agentId: agent.id, expiresAt });
  }
  // A lease holds off every action; a pending operation goes first (the next pass looks again); so
  // does the backoff after a policy's request for it failed.
  if (agent.leased || agent.operationPending) return out;
  const retryAt = policyRetryAt(agent.policyFailures);
  if (retryAt && now.getTime() < retryAt.getTime()) return out;

  if (expiresAt && now.getTime() >= expiresAt.getTime()) {
    out.push({ kind: 'act', agentId: agent.id, action: 'destroy', cause: 'expired', reason: `expired at ${expiresAt.toISOString()}`, dueAt: expiresAt });
    return out;
  }
  if (!IDLE_STATUSES.has(agent.status)) return out;

  if (agent.idle && agent.idle.length > 0) {
    const since = idleSince(agent, now);
    const due = dueStep(agent.idle, since.at, now);
    if (due && APPLIES_FROM[due.step.action].has(agent.instanceStatus)) {
      const what = since.last ? `last activity: ${since.last.kind}` : 'no activity reported';
      out.push({
        kind: 'act',
        agentId: agent.id,
        action: due.step.action,
        cause: 'idle',
        reason: `idle ${describeSeconds(due.step.afterSeconds)} since ${since.at.toISOString()} (${what})`,
        dueAt: due.dueAt,
      });
    }
    return out;
  }

  const after = settings.autoHibernateAfterMs;
  if (after !== null && !agent.poolStandby && agent.status === 'paused' && agent.instanceStatus === 'stopped') {
    const dueAt = new Date(agent.updatedAt.getTime() + after);
    if (dueAt.getTime() <= now.getTime()) {
      out.push({
        kind: 'act',
        agentId: agent.id,
        action: 'hibernate',
        cause: 'paused',
        reason: `paused since ${agent.updatedAt.toISOString()} (AUTO_HIBERNATE_AFTER_HOURS)`,
        dueAt,
      });
    }
  }
  return out;
}
