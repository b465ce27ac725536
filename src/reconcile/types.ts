import type { HetznerProjects } from '../clients/hetzner/projects';
import type { DataSource } from 'typeorm';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { Repositories } from '../db/repositories';
import type { Fleet } from '../fleet/fleet';
import type { OwnershipGuard } from '../fleet/ownership-guard';
import type { ReconcileReports } from './reports';
import type { Agent, Instance, InstanceStatus, Operation, OperationType } from '../entities';
import type { StuckStatus } from '../operations/types';
import type { ReconcileTrigger } from '../entities/reconcile-report.entity';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { OperationLedger } from '../operations/ledger';
import type { Outbox } from '../operations/outbox';
import type { Queues } from '../queues/queues';

export type OrphanPolicy = 'report' | 'delete';
/** An instance status an operation leaves behind when it stops half-way (declared by its descriptor). */
export type TransitionalStatus = StuckStatus;

export type DriftKind = 'server_off' | 'server_running' | 'server_gone' | 'device_gone' | 'device_replaced';

export interface DriftFinding {
  kind: DriftKind;
  instanceId: string;
  agentId: string;
  /** Instance status when the pass looked. */
  status: InstanceStatus;
  serverId: string | null;
  deviceId: string | null;
  /** repaired: state corrected; deferred: an operation for this agent is in flight; error: repair failed. */
  action: 'repaired' | 'deferred' | 'error';
  detail: string;
}

export interface StuckFinding {
  instanceId: string;
  agentId: string;
  status: TransitionalStatus;
  /** Seconds since the instance or its operation last moved. */
  idleSeconds: number;
  operationId: string | null;
  operationType: OperationType | null;
  /**
   * requeued: the operation was put back on its queue; job_active: its job is waiting or running after
   * all; awaiting_rollback: a provision that failed for good (the rollback listener and sweep own it);
   * needs_attention: nothing tailfleet can safely re-run; error: requeueing failed.
   */
  action: 'requeued' | 'job_active' | 'awaiting_rollback' | 'needs_attention' | 'error';
  detail: string;
}

export interface OrphanServerFinding {
  serverId: string;
  name: string;
  status: string;
  created: string;
  ageSeconds: number;
  agentId: string | null;
  provisioningJobId: string | null;
  /** First pass that reported it (carried over from earlier reports). */
  firstSeenAt: string;
  action: 'reported' | 'deleted' | 'already_gone' | 'kept' | 'delete_failed';
  detail?: string;
}

export interface OrphanDeviceFinding {
  deviceId: string;
  hostname: string;
  addresses: string[];
  created: string;
  ageSeconds: number;
  firstSeenAt: string;
  action: 'reported' | 'deleted' | 'already_gone' | 'kept' | 'delete_failed';
  detail?: string;
}

/** A destructive call the ownership guard refused, left for an operator (src/reconcile/attention.ts). */
export interface AttentionFinding {
  findingId: string;
  resourceType: string;
  resourceId: string;
  resourceName: string | null;
  /** What was refused: delete, power_off, revoke. */
  action: string;
  /** The workflow that asked (destroy, rollback, provision, stop, reconcile). */
  operation: string;
  operationId: string | null;
  agentId: string | null;
  instanceId: string | null;
  matched: string[];
  missing: string[];
  createdAt: string;
  /** open: the resource is still there and no live instance records it; resolved (this pass): gone or recorded. */
  state: 'open' | 'resolved';
  detail?: string;
}

export interface ReconcileReport {
  /** Row id of the stored report; null for a pass that was skipped. */
  id: string | null;
  trigger: ReconcileTrigger;
  operationId: string | null;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  settings: { orphans: OrphanPolicy; graceSeconds: number };
  observed: {
    /** This fleet's servers carrying managed-by=tailfleet (nothing else is ever judged or touched). */
    servers: number;
    devices: number;
    /** Devices carrying every configured tag and this fleet's hostname mark: the only ones the sweeper may judge. */
    taggedDevices: number;
    liveInstances: number;
  };
  summary: {
    driftedInstances: number;
    stuckInstances: number;
    orphanServers: number;
    orphanDevices: number;
    /** Unowned servers and devices younger than the grace period: judged again next pass. */
    withinGrace: number;
    /** Provisions in flight whose server has no recorded owner yet (left alone). */
    inFlight: number;
    repairs: number;
    /** Findings the previous report did not have: zero when nothing changed since. */
    newFindings: number;
    /** Refused deletes still open after this pass (needs_attention). */
    needsAttention: number;
    errors: number;
  };
  drift: DriftFinding[];
  stuck: StuckFinding[];
  orphanServers: OrphanServerFinding[];
  orphanDevices: OrphanDeviceFinding[];
  /** Ownership findings open when the pass began, and what the pass found of each. */
  attention: AttentionFinding[];
  errors: string[];
}

export interface ReconcilerSettings {
  orphans: OrphanPolicy;
  graceSeconds: number;
  /** Tags tailfleet gives its devices; a device must carry all of them to be judged at all. */
  tags: string[];
  /** How long an instance may sit in a transitional state without progress before its job is checked. */
  stuckAfterMs: Record<TransitionalStatus, number>;
  /**
   * Safety brake for delete mode: more orphans than this in one pass (e.g. the service pointed at an
   * empty database) are reported, not deleted, until an operator looks.
   */
  maxDeletesPerPass?: number;
  /** How long a pass waits for another one (other worker) to finish before giving up. */
  lockWaitMs?: number;
}

export interface ReconcilerDeps {
  /** The pass lock (a PostgreSQL advisory lock) and guarded transitions; rows are read through `repositories`. */
  dataSource: DataSource;
  repositories: Pick<Repositories, 'agents' | 'instances' | 'provisioningJobs' | 'operations' | 'findings'>;
  /** Stuck operations go back to the queue through the ledger and the outbox. */
  ledger: Pick<OperationLedger, 'requeue' | 'acceptReconcile' | 'acceptRepair'>;
  outbox: Pick<Outbox, 'add' | 'deliver'>;
  hetzner: Pick<HetznerClient, 'listServers' | 'getServer' | 'deleteServer'>;
  /** Every project the pass lists; each instance's and orphan's calls go to its own (default: `hetzner` alone). */
  projects?: HetznerProjects;
  tailscale: Pick<TailscaleClient, 'listDevices' | 'getDevice' | 'deleteDevice' | 'getAuthKey' | 'deleteAuthKey'>;
  queues: Pick<Queues, OperationType>;
  /** The pass only ever lists, judges, repairs or deletes this fleet's servers and devices. */
  fleet: Fleet;
  /** Every delete of a pass goes through it (src/fleet/ownership-guard.ts). */
  guard: OwnershipGuard;
  /** Where each pass's report is kept, and manual passes are requested. */
  reports: ReconcileReports;
  logger: Logger;
  metrics?: Pick<Metrics, 'reconcile' | 'reconcileRepairs'>;
  settings: ReconcilerSettings;
  now?: () => number;
}

/** What the checks of one pass share: the deps, the settings with their defaults, the clock. */
export interface PassContext {
  deps: ReconcilerDeps;
  /** Every delete of the pass goes through it (src/fleet/ownership-guard.ts). */
  guard: OwnershipGuard;
  settings: Required<ReconcilerSettings>;
  now: () => number;
}

/** The database as the pass saw it, read before the clouds (see reconciler.ts). */
export interface Snapshot {
  instances: Instance[];
  agents: Map<string, Agent>;
  /** Provisioning jobs queued or running in the database. */
  activePjIds: Set<string>;
  /** Operations queued or running, by agent. */
  activeOps: Map<string, Operation[]>;
  /** Device ids some live instance has recorded. */
  claimedDeviceIds: Set<string>;
}

export interface Ownership {
  serverIds: Set<string>;
  deviceIds: Set<string>;
  ips: Set<string>;
  hostnames: Set<string>;
  /** Instances still provisioning: a labelled server naming one of them belongs to it. */
  provisioningInstanceIds: Set<string>;
}
