import { Client } from 'pg';
import IORedis from 'ioredis';

/**
 * Counts PostgreSQL queries and Redis commands made by this process, to explain throughput figures
 * (what an operation costs in round trips). Wraps the client prototypes, so every pool, every
 * BullMQ connection and every TypeORM query is seen; counting costs a few nanoseconds per call.
 */
export interface RoundTrips {
  sql: number;
  redis: number;
  redisByCommand: Record<string, number>;
}

let installed = false;
const counts: RoundTrips = { sql: 0, redis: 0, redisByCommand: {} };

export function installRoundTripCounters(): void {
  if (installed) return;
  installed = true;
  const pgProto = Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const query = pgProto.query;
  pgProto.query = function (this: unknown, ...args: unknown[]) {
    counts.sql++;
    return query.apply(this, args);
  };
  const redisProto = IORedis.prototype as unknown as { sendCommand: (cmd: { name: string }, ...rest: unknown[]) => unknown };
  const send = redisProto.sendCommand;
  redisProto.sendCommand = function (this: unknown, cmd: { name: string }, ...rest: unknown[]) {
    counts.redis++;
    counts.redisByCommand[cmd.name] = (counts.redisByCommand[cmd.name] ?? 0) + 1;
    return send.call(this, cmd, ...rest);
  };
}

export function roundTrips(): RoundTrips {
  return { sql: counts.sql, redis: counts.redis, redisByCommand: { ...counts.redisByCommand } };
}

export function roundTripsSince(before: RoundTrips): RoundTrips {
  const now = roundTrips();
  const byCommand: Record<string, number> = {};
  for (const [k, v] of Object.entries(now.redisByCommand)) {
    const d = v - (before.redisByCommand[k] ?? 0);
    if (d > 0) byCommand[k] = d;
  }
  return { sql: now.sql - before.sql, redis: now.redis - before.redis, redisByCommand: byCommand };
}
