import { CronExpressionParser } from 'cron-parser';
import type { Pool, PoolSchedule } from '../entities';

/**
 * Pool schedules: a cron expression read in its own IANA time zone (cron-parser, which follows the
 * zone's daylight-saving rules: `0 8 * * *` in Europe/Berlin is 07:00 UTC in winter and 06:00 UTC in
 * summer; a time that a spring-forward skips does not fire that day). From a schedule's time on, the
 * pool keeps at least its `minReady`, until another schedule's time comes.
 */

/** Why a cron expression cannot be used (five fields: minute hour day-of-month month day-of-week), or null. */
export function cronProblem(cron: string): string | null {
  if (cron.trim().split(/\s+/).length !== 5) return 'must have five fields: minute hour day-of-month month day-of-week';
  try {
    CronExpressionParser.parse(cron, { tz: 'UTC' });
    return null;
  } catch (err) {
    return `is not a valid cron expression (${(err as Error).message})`;
  }
}

/** Whether the runtime knows the IANA time zone. */
export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return zone.length > 0;
  } catch {
    return false;
  }
}

/** When the schedule last fired at or before `at`, or null (an expression that never fires). */
export function lastFiring(schedule: PoolSchedule, at: Date): Date | null {
  try {
    // prev() is strictly before currentDate: a firing exactly at `at` counts as fired.
    const expr = CronExpressionParser.parse(schedule.cron, { tz: schedule.timezone, currentDate: new Date(at.getTime() + 1) });
    return expr.prev().toDate();
  } catch {
    return null;
  }
}

/** The schedule in force at `at` (the one that fired last), or null. */
export function scheduleInForce(schedules: readonly PoolSchedule[], at: Date): PoolSchedule | null {
  let best: { schedule: PoolSchedule; at: number } | null = null;
  for (const schedule of schedules) {
    const fired = lastFiring(schedule, at);
    if (fired && (!best || fired.getTime() > best.at)) best = { schedule, at: fired.getTime() };
  }
  return best?.schedule ?? null;
}

/**
 * How many standbys the pool keeps at `at`: its minReady, raised by the schedule in force, and no
 * more than maxSize.
 */
export function targetAt(pool: Pick<Pool, 'minReady' | 'maxSize' | 'schedules'>, at: Date): number {
  const scheduled = scheduleInForce(pool.schedules, at)?.minReady ?? 0;
  const wanted = Math.max(pool.minReady, scheduled);
  return pool.maxSize === null ? wanted : Math.min(wanted, pool.maxSize);
}
