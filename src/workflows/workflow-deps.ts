import type { DataSource } from 'typeorm';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerProjects } from '../clients/hetzner/projects';
import type { Placement } from '../config';
import type { CapacityStore } from './placement';
import type { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { Repositories } from '../db/repositories';
import type { NewEvent, TransitionRequest } from '../db/transitions';
import type { Fleet } from '../fleet/fleet';
import type { OwnershipGuard } from '../fleet/ownership-guard';
import type { Logger } from '../lib/logger';

export interface WorkflowSettings {
  serverType: string;
  image: string;
  location: string;
  sshKeys: string[];
  shutdownTimeoutMs: number;
  enrollmentTimeoutMs: number;
  actionTimeoutMs: number;
  /** HETZNER_PLACEMENTS: where an agent without places of its own goes (default: location and serverType). */
  placements?: Placement[];
  /** How long a refused place (or a full project) is skipped by every worker (default 600 s). */
  placementCooldownMs?: number;
  /** HETZNER_PUBLIC_IPV4 (default true). */
  publicIpv4?: boolean;
  /** TAILFLEET_PUBLIC_URL: where agents' reporters send their activity; null/absent = no reporter. */
  publicUrl?: string | null;
}

/** What every workflow is built from (the worker role builds it once and hands the same object to each). */
export interface WorkflowDeps {
  /** Transaction boundaries and guarded transitions (src/db/transitions); rows are read through `repositories`. */
  dataSource: DataSource;
  repositories: Pick<Repositories, 'agents' | 'instances' | 'provisioningJobs' | 'events' | 'findings' | 'tokens' | 'operations' | 'leases'>;
  /** Calls go to the project of the operation's instance (HetznerProjects.client); the only project's without `projects`. */
  hetzner: HetznerClient;
  /** The deployment's Hetzner projects (default: `hetzner` alone, as the project `default`). */
  projects?: HetznerProjects;
  /** Refused places and full projects, shared by the workers (default: this process's memory). */
  capacity?: CapacityStore;
  tailscale: TailscaleClient;
  /** Which machines are this deployment's: the labels and hostnames it gives, the ones it looks for. */
  fleet: Fleet;
  /** The guard every destructive call goes through (src/fleet/ownership-guard.ts), one per process. */
  guard: OwnershipGuard;
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
