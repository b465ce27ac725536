/**
 * A live lease: not released and not yet expired. The predicate, over `agent_leases` rows aliased
 * `l`, with the moment to judge at as `$now`-style placeholder `:now` replaced by the caller's
 * parameter; LIVE_LEASE_EXISTS is the form for a statement over `agents` aliased `a` (the pool
 * claim's "never a leased agent", the policy loop's "never an agent under lease").
 */
export const LIVE_LEASE_PREDICATE = (now: string) => `l."released_at" IS NULL AND l."expires_at" > ${now}`;

export const LIVE_LEASE_EXISTS = (now: string, agent = 'a."id"') =>
  `EXISTS (SELECT 1 FROM "agent_leases" l WHERE l."agent_id" = ${agent} AND ${LIVE_LEASE_PREDICATE(now)})`;

/**
 * When a lease last counted as activity: its end (released, or expired) — for a live lease a moment
 * still to come. The greatest over an agent's leases, as SQL over `agents` aliased `a`.
 */
export const LEASE_ACTIVITY_SQL = `(SELECT max(LEAST(COALESCE(l."released_at", l."expires_at"), l."expires_at")) FROM "agent_leases" l WHERE l."agent_id" = a."id")`;
