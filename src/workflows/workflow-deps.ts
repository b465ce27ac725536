import type { DataSource } from 'typeorm';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { Repositories } from '../db/repositories';
import type { NewEvent, TransitionRequest } from '../db/transitions';
import type { Fleet } from '../fleet/fleet';
import { OwnershipGuard } from '../fleet/ownership-guard';
import type { Logger } from '../lib/logger';

export interface WorkflowSettings {
  serverType: string;
  image: string;
  location: string;
  sshKeys: string[];
  shutdownTimeoutMs: number;
  enrollmentTimeoutMs: number;
  actionTimeoutMs: number;
}

/** What every workflow is built from (src/server.ts builds it once and hands the same object to each). */
export interface WorkflowDeps {
  /** Transaction boundaries and guarded transitions (src/db/transitions); rows are read through `repositories`. */
  dataSource: DataSource;
  repositories: Pick<Repositories, 'agents' | 'instances' | 'provisioningJobs' | 'events' | 'findings'>;
  hetzner: HetznerClient;
  tailscale: TailscaleClient;
  /** Which machines are this deployment's: the labels and hostnames it gives, the ones it looks for. */
  fleet: Fleet;
  logger: Logger;
  settings: WorkflowSettings;
}

export interface OperationContext {
  operationId?: string;
  /**
   * Given by the job runner: commits the work's last moves together with the operation's success, in
   * one statement. Without it (a workflow called directly) the moves are made alone.
   */
  finish?: (moves: readonly TransitionRequest[], lastStep: string, events?: readonly NewEvent[]) => Promise<void>;
}

/** The guard every destructive call of a workflow goes through (src/fleet/ownership-guard.ts). */
export function ownershipGuard(deps: WorkflowDeps): OwnershipGuard {
  return new OwnershipGuard({
    hetzner: deps.hetzner,
    tailscale: deps.tailscale,
    fleet: deps.fleet,
    audit: deps.repositories.findings,
    logger: deps.logger,
  });
}
