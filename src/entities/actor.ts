/** The actor of everything tailfleet does by itself (workers, reconciler, sweeps, policies). */
export const SYSTEM_ACTOR = 'system';

/** Room for `token:<name>#<uuid>` with a name of TOKEN_NAME_MAX_LENGTH (events, operations, webhook subscriptions). */
export const ACTOR_MAX_LENGTH = 128;
