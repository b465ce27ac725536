import type { HetznerClientDeps } from '../clients/hetzner/hetzner.client';
import type { TailscaleClientDeps } from '../clients/tailscale/tailscale.client';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { WorkerSettings } from '../workers';

/** What a test, a bench or the demo may set beside the config. */
export interface TailfleetOverrides {
  logger?: Logger;
  metrics?: Metrics;
  /** Extra client options (e.g. short retry delays in tests); the config supplies the rest. */
  hetzner?: Partial<HetznerClientDeps>;
  tailscale?: Partial<TailscaleClientDeps>;
  worker?: Partial<WorkerSettings>;
  /** Run the failed-provision hook and sweep in worker processes (default true). */
  rollbackListener?: boolean;
  /** Apply pending migrations at start (default true). */
  migrate?: boolean;
  /** How long start() waits for an unreachable PostgreSQL (default DATABASE_STARTUP_WAIT_MS, 60 s). */
  databaseStartupWaitMs?: number;
  /** The policy loop's clock (tests move it across a threshold instead of waiting for it). */
  policyClock?: () => Date;
  /** Run the pool policy's passes in the background (default true; false: only runOnce() runs one). */
  poolPolicy?: boolean;
  /** The time the pool policy reads its schedules at (default: the system clock). */
  poolClock?: () => Date;
}
