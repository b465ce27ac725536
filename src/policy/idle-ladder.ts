import { z } from 'zod';
import { IDLE_ACTIONS, type IdleAction, type IdleStep } from '../entities';

/**
 * The idle ladder of a spec (an agent's; a pool's takes the same schema): each rung says what to do
 * once the agent has had no activity for `afterSeconds`. Rungs go up in time and down in cost —
 * stop, then hibernate, then destroy — so a later rung never undoes an earlier one.
 */

// How deep each action puts an agent: a rung must go deeper than the one before it.
const DEPTH: Record<IdleAction, number> = { stop: 1, hibernate: 2, destroy: 3 };

/** A minute: the reporter's heartbeat interval, so a busy agent is never idle for a whole rung. */
export const MIN_IDLE_SECONDS = 60;
/** A year. */
export const MAX_IDLE_SECONDS = 366 * 86400;

export const idleStepSchema = z.strictObject({
  afterSeconds: z
    .int('must be a whole number of seconds')
    .min(MIN_IDLE_SECONDS, `must be at least ${MIN_IDLE_SECONDS} (the reporter's heartbeat interval)`)
    .max(MAX_IDLE_SECONDS, `must be at most ${MAX_IDLE_SECONDS} (a year)`)
    .meta({ description: 'Seconds without activity (a busy heartbeat, a session, a lease, a command) before the action.' }),
  action: z.enum(IDLE_ACTIONS, { error: () => `must be one of ${IDLE_ACTIONS.join(', ')}` }),
});

export const idleLadderSchema = z
  .array(idleStepSchema)
  .min(1, 'must have at least one step (leave it out for no idle policy)')
  .max(IDLE_ACTIONS.length, `at most ${IDLE_ACTIONS.length} steps, one per action`)
  .superRefine((steps, ctx) => {
    for (let i = 1; i < steps.length; i++) {
      const [prev, step] = [steps[i - 1]!, steps[i]!];
      if (step.afterSeconds <= prev.afterSeconds) {
        ctx.addIssue({ code: 'custom', path: [i, 'afterSeconds'], message: `must be greater than the step before it (${prev.afterSeconds})` });
      }
      if (DEPTH[step.action] <= DEPTH[prev.action]) {
        ctx.addIssue({ code: 'custom', path: [i, 'action'], message: `must go further than the step before it (${prev.action}): stop, then hibernate, then destroy` });
      }
    }
  })
  .meta({
    description:
      'The idle ladder, e.g. `[{"afterSeconds":1800,"action":"stop"},{"afterSeconds":86400,"action":"hibernate"},' +
      '{"afterSeconds":2592000,"action":"destroy"}]`: each step is acted on within POLICY_INTERVAL_SECONDS of its threshold. ' +
      'Steps go up in time and in depth (stop → hibernate → destroy).',
  });

/** How deep an action puts an agent (for comparing rungs and states). */
export function depthOf(action: IdleAction): number {
  return DEPTH[action];
}

/** "30 min", "2 h", "1 d 6 h": how long an idle threshold is, for reasons and the README. */
export function describeSeconds(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

export type { IdleStep };
