import type { Job, JobType } from 'bullmq';
import { In, Not, type DataSource } from 'typeorm';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { GuardedUpdateConflictError, StateConflictError } from '../db/errors';
import { insertOperation } from '../db/operation.repository';
import { inTransaction, recordEvent, transition, transitionGroup, type TransitionRequest } from '../db/transitions';
import {
  Agent,
  Instance,
  type InstanceStatus,
  Operation,
  type OperationType,
  ProvisioningJob,
  TERMINAL_INSTANCE_STATUSES,
} from '../entities';
import { ReconcileReportRecord, type ReconcileTrigger } from '../entities/reconcile-report.entity';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { jobIds, type Queues } from '../queues/queues';
import { agentHostname } from './cloud-init';
import { AGENT_LABEL, INSTANCE_LABEL, JOB_LABEL, MANAGED_LABEL } from './server-labels';

/**
 * Drift reconciler and orphan sweeper.
 *
 * The database says what should exist, the clouds say what does. One pass reads the database first,
 * then lists the labelled servers and the tailnet devices (a bounded number of requests: one per
 * 50 servers, one device listing), compares, and repairs:
 * - a running/stopped instance whose server was powered off, on or deleted behind tailfleet's back
 *   gets its recorded state corrected (guarded transitions with events);
 * - an instance stuck in a transitional state with no live job gets its operation enqueued again;
 * - servers and devices nobody owns (orphans) older than a grace period are reported, and deleted
 *   when configured to.
 *
 * The database is read before the clouds on purpose: every repair is a guarded transition from the
 * status seen in that snapshot, so an operation that moved the instance after the snapshot (and
 * whose effect the listing may already show) makes the repair lose the race instead of undoing it.
 */

export type OrphanPolicy = 'report' | 'delete';
export type TransitionalStatus = 'pending' | 'provisioning' | 'stopping' | 'starting' | 'destroying';

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
    /** Servers carrying managed-by=tailfleet (nothing else is ever listed or touched). */
    servers: number;
    devices: number;
    /** Devices carrying every configured tag: the only ones the sweeper may judge. */
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
    errors: number;
  };
  drift: DriftFinding[];
  stuck: StuckFinding[];
  orphanServers: OrphanServerFinding[];
  orphanDevices: OrphanDeviceFinding[];
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
  /** Reports kept in the database. */
  keepReports?: number;
  /** How long a pass waits for another one (other worker) to finish before giving up. */
  lockWaitMs?: number;
}

export interface ReconcilerDeps {
  dataSource: DataSource;
  hetzner: Pick<HetznerClient, 'listServers' | 'getServer' | 'deleteServer'>;
  tailscale: Pick<TailscaleClient, 'listDevices' | 'getDevice' | 'deleteDevice'>;
  queues: Pick<Queues, 'provision' | 'stop' | 'start' | 'destroy' | 'rollback' | 'reconcile'>;
  logger: Logger;
  metrics?: Pick<Metrics, 'reconcile' | 'reconcileRepairs'>;
  settings: ReconcilerSettings;
  now?: () => number;
}

/** Another pass holds the lock for longer than lockWaitMs. Transient: the job may try again. */
export class ReconcileBusyError extends Error {
  constructor() {
    super('Another reconcile pass is running');
    this.name = 'ReconcileBusyError';
  }
}

/** Derives per-state timeouts from the time each operation may legitimately take. */
export function stuckTimeouts(o: {
  actionTimeoutMs: number;
  shutdownTimeoutMs: number;
  enrollmentTimeoutMs: number;
  /** Slack for queueing and backoff between attempts. */
  marginMs?: number;
}): Record<TransitionalStatus, number> {
  const margin = o.marginMs ?? 5 * 60_000;
  return {
    pending: margin,
    provisioning: 2 * o.actionTimeoutMs + o.enrollmentTimeoutMs + margin,
    stopping: o.shutdownTimeoutMs + o.actionTimeoutMs + margin,
    starting: o.actionTimeoutMs + margin,
    destroying: 2 * o.actionTimeoutMs + margin,
  };
}

const TRANSITIONAL: readonly TransitionalStatus[] = ['pending', 'provisioning', 'stopping', 'starting', 'destroying'];
const OPERATION_FOR: Record<TransitionalStatus, 'provision' | 'stop' | 'start' | 'destroy'> = {
  pending: 'provision',
  provisioning: 'provision',
  stopping: 'stop',
  starting: 'start',
  destroying: 'destroy',
};
/** BullMQ states in which a job will still run (or is running). */
const LIVE_JOB_STATES: readonly JobType[] = [
  'active',
  'waiting',
  'waiting-children',
  'delayed',
  'prioritized',
];
// Arbitrary constant, distinct from the migration lock: one reconcile pass at a time across processes.
const RECONCILE_LOCK_KEY = 7_412_903_612;
const DELETE_CONCURRENCY = 4;

interface Snapshot {
  instances: Instance[];
  agents: Map<string, Agent>;
  /** Provisioning jobs queued or running in the database. */
  activePjIds: Set<string>;
  /** Operations queued or running, by agent. */
  activeOps: Map<string, Operation[]>;
  /** Device ids some live instance has recorded. */
  claimedDeviceIds: Set<string>;
}

interface Ownership {
  serverIds: Set<string>;
  deviceIds: Set<string>;
  ips: Set<string>;
  hostnames: Set<string>;
  /** Instances still provisioning: a labelled server naming one of them belongs to it. */
  provisioningInstanceIds: Set<string>;
}

export class ReconcilerService {
  private readonly now: () => number;
  private readonly settings: Required<ReconcilerSettings>;
  private readonly reports: ReconcileReports;

  constructor(private readonly deps: ReconcilerDeps) {
    this.now = deps.now ?? Date.now;
    this.settings = {
      maxDeletesPerPass: 20,
      keepReports: 200,
      lockWaitMs: 30_000,
      ...deps.settings,
    };
    this.reports = new ReconcileReports({
      dataSource: deps.dataSource,
      queues: deps.queues,
      keep: this.settings.keepReports,
    });
  }

  /** The newest stored report, from whichever process ran it; null before the first pass. */
  latestReport(): Promise<ReconcileReport | null> {
    return this.reports.latestReport();
  }

  /** Queues one pass now (POST /v1/reconcile). */
  requestPass(): Promise<{ operation: Operation; created: boolean }> {
    return this.reports.requestPass();
  }

  /** Runs one full pass and stores its report. Throws when the clouds cannot be listed. */
  async runPass(opts: { trigger?: ReconcileTrigger; operationId?: string | null } = {}): Promise<ReconcileReport> {
    const runner = this.deps.dataSource.createQueryRunner();
    await runner.connect();
    try {
      await this.acquireLock(runner);
      try {
        return await this.pass(opts.trigger ?? 'manual', opts.operationId ?? null);
      } finally {
        await runner.query('SELECT pg_advisory_unlock($1)', [RECONCILE_LOCK_KEY]).catch(() => undefined);
      }
    } finally {
      await runner.release();
    }
  }

  private async acquireLock(runner: { query(sql: string, params?: unknown[]): Promise<any> }): Promise<void> {
    const deadline = Date.now() + this.settings.lockWaitMs;
    while (true) {
      const [row] = await runner.query('SELECT pg_try_advisory_lock($1) AS locked', [RECONCILE_LOCK_KEY]);
      if (row?.locked) return;
      if (Date.now() >= deadline) throw new ReconcileBusyError();
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  private async pass(trigger: ReconcileTrigger, operationId: string | null): Promise<ReconcileReport> {
    const startedAt = new Date(this.now());
    const log = this.deps.logger.child({ component: 'reconciler', trigger, operationId });
    const errors: string[] = [];

    const snapshot = await this.snapshot();
    const [rawServers, devices] = await Promise.all([
      this.deps.hetzner.listServers(`${MANAGED_LABEL.key}=${MANAGED_LABEL.value}`),
      this.deps.tailscale.listDevices(),
    ]);
    // The label selector already filters; checking again means no server without the label is ever
    // judged, whatever the API (or a future selector bug) returns. Pages may overlap when servers
    // are deleted while listing, so ids are de-duplicated.
    const servers = new Map<string, HetznerServer>();
    for (const s of rawServers) if (s.labels?.[MANAGED_LABEL.key] === MANAGED_LABEL.value) servers.set(String(s.id), s);
    const devicesById = new Map(devices.map((d) => [d.id, d]));
    // Candidates to take over a lost device id: tagged, enrolled and not recorded by any instance.
    const unclaimedByHostname = new Map<string, TailscaleDevice>();
    for (const d of devices) {
      if (!this.carriesTags(d) || snapshot.claimedDeviceIds.has(d.id) || !d.addresses?.length) continue;
      unclaimedByHostname.set((d.hostname ?? '').toLowerCase(), d);
    }
    const inFlightPjIds = await this.inFlightProvisioningJobs(snapshot);

    const drift: DriftFinding[] = [];
    const stuck: StuckFinding[] = [];
    const deadInstanceIds = new Set<string>();
    for (const instance of snapshot.instances) {
      try {
        if (instance.status === 'running' || instance.status === 'stopped') {
          const found =
            (await this.checkServer(instance, servers, snapshot, deadInstanceIds)) ??
            (await this.checkDevice(instance, devicesById, unclaimedByHostname, snapshot));
          if (found) drift.push(found);
          if (found?.action === 'error') errors.push(`instance ${instance.id}: ${found.detail}`);
        } else if ((TRANSITIONAL as readonly string[]).includes(instance.status)) {
          const found = await this.checkStuck(instance);
          if (found) stuck.push(found);
          if (found?.action === 'error') errors.push(`instance ${instance.id}: ${found.detail}`);
        }
      } catch (err) {
        const message = `instance ${instance.id}: ${(err as Error).message}`;
        errors.push(message);
        log.error({ err, instanceId: instance.id }, 'Reconcile check failed');
      }
    }

    const previous = await this.reports.latestReport().catch(() => null);
    const ownership = this.ownership(snapshot, deadInstanceIds);
    const { orphanServers, orphanDevices, withinGrace, inFlight } = this.findOrphans(
      servers,
      devices,
      ownership,
      inFlightPjIds,
      previous,
    );
    if (this.settings.orphans === 'delete') {
      await this.deleteOrphans(orphanServers, orphanDevices, errors, log);
    }

    const repairs =
      drift.filter((d) => d.action === 'repaired').length +
      stuck.filter((s) => s.action === 'requeued').length +
      orphanServers.filter((o) => o.action === 'deleted').length +
      orphanDevices.filter((o) => o.action === 'deleted').length;
    const previousOrphans = new Set([
      ...(previous?.orphanServers ?? []).map((o) => `s:${o.serverId}`),
      ...(previous?.orphanDevices ?? []).map((o) => `d:${o.deviceId}`),
    ]);
    const newFindings =
      drift.filter((d) => d.action !== 'deferred').length +
      stuck.filter((s) => s.action === 'requeued' || s.action === 'needs_attention' || s.action === 'error').length +
      orphanServers.filter((o) => !previousOrphans.has(`s:${o.serverId}`)).length +
      orphanDevices.filter((o) => !previousOrphans.has(`d:${o.deviceId}`)).length;

    const finishedAt = new Date(this.now());
    const report: ReconcileReport = {
      id: null,
      trigger,
      operationId,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      settings: { orphans: this.settings.orphans, graceSeconds: this.settings.graceSeconds },
      observed: {
        servers: servers.size,
        devices: devices.length,
        taggedDevices: devices.filter((d) => this.carriesTags(d)).length,
        liveInstances: snapshot.instances.length,
      },
      summary: {
        driftedInstances: drift.length,
        stuckInstances: stuck.length,
        orphanServers: orphanServers.length,
        orphanDevices: orphanDevices.length,
        withinGrace,
        inFlight,
        repairs,
        newFindings,
        errors: errors.length,
      },
      drift,
      stuck,
      orphanServers,
      orphanDevices,
      errors,
    };
    report.id = await this.reports.save(report);
    this.publishMetrics(report);
    log.info(
      { summary: report.summary, durationMs: report.durationMs },
      `[Reconcile] Pass finished: ${drift.length} drifted, ${stuck.length} stuck, ${orphanServers.length} orphan servers, ${orphanDevices.length} orphan devices, ${repairs} repairs`,
    );
    return report;
  }

  private async snapshot(): Promise<Snapshot> {
    const db = this.deps.dataSource;
    const instances = await db.getRepository(Instance).find({
      where: { status: Not(In([...TERMINAL_INSTANCE_STATUSES])) },
      order: { createdAt: 'ASC' },
    });
    const agentIds = [...new Set(instances.map((i) => i.agentId))];
    const agents = new Map<string, Agent>();
    for (let i = 0; i < agentIds.length; i += 1000) {
      const chunk = await db.getRepository(Agent).find({ where: { id: In(agentIds.slice(i, i + 1000)) } });
      for (const a of chunk) agents.set(a.id, a);
    }
    const pjs = await db
      .getRepository(ProvisioningJob)
      .find({ where: { status: In(['queued', 'running']) }, select: { id: true } });
    const ops = await db.getRepository(Operation).find({ where: { status: In(['queued', 'running']) } });
    const activeOps = new Map<string, Operation[]>();
    for (const op of ops) {
      if (!op.agentId) continue;
      activeOps.set(op.agentId, [...(activeOps.get(op.agentId) ?? []), op]);
    }
    const claimedDeviceIds = new Set(instances.map((i) => i.tailscaleDeviceId).filter((d): d is string => !!d));
    return { instances, agents, activePjIds: new Set(pjs.map((p) => p.id)), activeOps, claimedDeviceIds };
  }

  /**
   * Provisioning jobs whose work may still create or delete a server: queued/running in the database,
   * or with a provision or rollback job still live in Redis (the database may lag the queue).
   */
  private async inFlightProvisioningJobs(snapshot: Snapshot): Promise<Set<string>> {
    const ids = new Set(snapshot.activePjIds);
    // Without the queue's view an in-flight provision could look like an orphan: an error here
    // fails the whole pass rather than judging blind.
    for (const queue of [this.deps.queues.provision, this.deps.queues.rollback] as const) {
      const jobs = (await queue.getJobs([...LIVE_JOB_STATES])) as Job<{ provisioningJobId?: string }>[];
      for (const job of jobs) if (job?.data?.provisioningJobId) ids.add(job.data.provisioningJobId);
    }
    return ids;
  }

  /** Server state drift for a running or stopped instance. Returns null when the server agrees. */
  private async checkServer(
    instance: Instance,
    servers: Map<string, HetznerServer>,
    snapshot: Snapshot,
    deadInstanceIds: Set<string>,
  ): Promise<DriftFinding | null> {
    if (!instance.serverId) return null;
    let server: HetznerServer | null | undefined = servers.get(instance.serverId);
    let unlabelled = false;
    if (!server) {
      // Absent from the listing: deleted, or its label was removed, or it moved between pages while
      // we listed. One read settles it before anything is recorded.
      server = await this.deps.hetzner.getServer(Number(instance.serverId));
      unlabelled = server !== null;
    }
    let kind: DriftKind;
    if (server === null) kind = 'server_gone';
    else if (instance.status === 'running' && server.status === 'off') kind = 'server_off';
    else if (instance.status === 'stopped' && server.status === 'running') kind = 'server_running';
    else return null;

    const base = {
      kind,
      instanceId: instance.id,
      agentId: instance.agentId,
      status: instance.status,
      serverId: instance.serverId,
      deviceId: instance.tailscaleDeviceId,
    };
    const busy = await this.liveOperation(instance.agentId, snapshot);
    const what =
      kind === 'server_gone'
        ? `Server ${instance.serverId} no longer exists at Hetzner (deleted outside tailfleet)`
        : kind === 'server_off'
          ? `Server ${instance.serverId} is off but the instance was running (powered off outside tailfleet)`
          : `Server ${instance.serverId} is running but the instance was stopped (powered on outside tailfleet)`;
    const note = unlabelled ? '; the server no longer carries the managed-by label' : '';
    if (busy) {
      // The operation in flight will meet the real server state itself; correcting under it would
      // turn its next guarded step into a conflict.
      return { ...base, action: 'deferred', detail: `${what}${note}; left to ${busy.type} operation ${busy.id}` };
    }
    try {
      await this.repairServerDrift(instance, kind, what, snapshot);
    } catch (err) {
      if (err instanceof StateConflictError) {
        // An operation moved the instance after the snapshot; its view is newer than ours.
        return { ...base, action: 'deferred', detail: `${what}${note}; not recorded: ${err.message}` };
      }
      return { ...base, action: 'error', detail: `${what}${note}; repair failed: ${(err as Error).message}` };
    }
    if (kind === 'server_gone') deadInstanceIds.add(instance.id);
    this.deps.metrics?.reconcileRepairs.inc({ kind });
    return { ...base, action: 'repaired', detail: `${what}${note}` };
  }

  private async repairServerDrift(instance: Instance, kind: DriftKind, what: string, snapshot: Snapshot) {
    const reason = `reconcile: ${what}`;
    const agent = snapshot.agents.get(instance.agentId);
    const now = new Date(this.now());
    const moves: TransitionRequest<any>[] = [];
    if (kind === 'server_off') {
      moves.push(
        { entity: 'instance', id: instance.id, from: ['running'], to: 'stopping', reason },
        { entity: 'instance', id: instance.id, from: ['stopping'], to: 'stopped', reason, patch: { stoppedAt: now } },
      );
      if (agent?.status === 'active') moves.push({ entity: 'agent', id: agent.id, from: ['active'], to: 'paused', reason });
    } else if (kind === 'server_running') {
      moves.push(
        { entity: 'instance', id: instance.id, from: ['stopped'], to: 'starting', reason },
        {
          entity: 'instance',
          id: instance.id,
          from: ['starting'],
          to: 'running',
          reason,
          patch: { startedAt: now, stoppedAt: null },
        },
      );
      if (agent?.status === 'paused') moves.push({ entity: 'agent', id: agent.id, from: ['paused'], to: 'active', reason });
    } else {
      moves.push({
        entity: 'instance',
        id: instance.id,
        from: [instance.status],
        to: 'failed',
        reason,
        patch: { error: `${what}; found by reconcile` },
      });
      if (agent && (agent.status === 'active' || agent.status === 'paused')) {
        moves.push({ entity: 'agent', id: agent.id, from: [agent.status], to: 'error', reason });
      }
    }
    await transitionGroup(this.deps.dataSource, moves);
  }

  /** Tailnet device drift for a running or stopped instance whose server agrees. */
  private async checkDevice(
    instance: Instance,
    devicesById: Map<string, TailscaleDevice>,
    unclaimedByHostname: Map<string, TailscaleDevice>,
    snapshot: Snapshot,
  ): Promise<DriftFinding | null> {
    if (instance.tailscaleDeviceId && devicesById.has(instance.tailscaleDeviceId)) return null;
    const hostname = this.instanceHostname(instance, snapshot);
    const replacement = hostname ? unclaimedByHostname.get(hostname) : undefined;
    if (!instance.tailscaleDeviceId && !replacement) return null;

    const base = {
      instanceId: instance.id,
      agentId: instance.agentId,
      status: instance.status,
      serverId: instance.serverId,
      deviceId: instance.tailscaleDeviceId,
    };
    if (!replacement) {
      const still = await this.deps.tailscale.getDevice(instance.tailscaleDeviceId!);
      if (still) return null;
    }
    const busy = await this.liveOperation(instance.agentId, snapshot);
    const what = replacement
      ? instance.tailscaleDeviceId
        ? `Tailnet device ${instance.tailscaleDeviceId} was replaced by ${replacement.id} (${hostname} re-joined the tailnet)`
        : `${hostname} re-joined the tailnet as device ${replacement.id}`
      : `Tailnet device ${instance.tailscaleDeviceId} was removed from the tailnet; the machine is unreachable over the tailnet until it joins again`;
    const kind: DriftKind = replacement ? 'device_replaced' : 'device_gone';
    if (busy) return { ...base, kind, action: 'deferred', detail: `${what}; left to ${busy.type} operation ${busy.id}` };

    const patch = replacement
      ? { tailscaleDeviceId: replacement.id, tailscaleIp: firstIpv4(replacement.addresses), error: null }
      : { tailscaleDeviceId: null, tailscaleIp: null, error: `${what}; found by reconcile` };
    try {
      await this.updateDevice(instance, patch, `reconcile: ${what}`);
    } catch (err) {
      if (err instanceof StateConflictError) {
        return { ...base, kind, action: 'deferred', detail: `${what}; not recorded: ${err.message}` };
      }
      return { ...base, kind, action: 'error', detail: `${what}; repair failed: ${(err as Error).message}` };
    }
    if (replacement) unclaimedByHostname.delete(hostname!);
    this.deps.metrics?.reconcileRepairs.inc({ kind });
    return { ...base, kind, action: 'repaired', detail: what };
  }

  /**
   * Device columns change without a status change, so this is a guarded update (same status, same
   * device as seen) plus an event row in one transaction, the same shape transition() writes.
   */
  private async updateDevice(
    instance: Instance,
    patch: { tailscaleDeviceId: string | null; tailscaleIp: string | null; error: string | null },
    reason: string,
  ): Promise<void> {
    await inTransaction(this.deps.dataSource, async (manager) => {
      const qb = manager
        .createQueryBuilder()
        .update(Instance)
        .set({ ...patch, updatedAt: () => 'now()' })
        .where('id = :id AND status = :status', { id: instance.id, status: instance.status });
      if (instance.tailscaleDeviceId) qb.andWhere('tailscale_device_id = :device', { device: instance.tailscaleDeviceId });
      else qb.andWhere('tailscale_device_id IS NULL');
      const result = await qb.execute();
      if (result.affected !== 1) {
        const now = await manager.findOne(Instance, { where: { id: instance.id }, select: { id: true, status: true } });
        throw new GuardedUpdateConflictError('instance', instance.id, 'take a tailnet device change', now?.status ?? 'gone');
      }
      await recordEvent(manager, {
        entityType: 'instance',
        entityId: instance.id,
        agentId: instance.agentId,
        fromStatus: instance.status,
        toStatus: instance.status,
        reason,
      });
    });
  }

  /** An operation row for this agent that still has a job which will run (or is running). */
  private async liveOperation(agentId: string, snapshot: Snapshot): Promise<Operation | null> {
    for (const op of snapshot.activeOps.get(agentId) ?? []) {
      if (op.type === 'reconcile') continue;
      const state = await this.jobState(op);
      if (state && LIVE_JOB_STATES.includes(state as JobType)) return op;
    }
    return null;
  }

  private async jobState(op: Operation): Promise<string | null> {
    const queue = this.queueFor(op.type);
    if (!queue) return null;
    const job = await queue.getJob(op.queueJobId ?? jobIds.operation(op.id));
    return job ? await job.getState() : null;
  }

  private queueFor(type: OperationType) {
    const q = this.deps.queues;
    switch (type) {
      case 'provision':
        return q.provision;
      case 'stop':
        return q.stop;
      case 'start':
        return q.start;
      case 'destroy':
        return q.destroy;
      case 'rollback':
        return q.rollback;
      default:
        return null;
    }
  }

  /** An instance sitting in a transitional state past its timeout: is anything still working on it? */
  private async checkStuck(instance: Instance): Promise<StuckFinding | null> {
    const status = instance.status as TransitionalStatus;
    const type = OPERATION_FOR[status];
    const ops = this.deps.dataSource.getRepository(Operation);
    const op =
      type === 'provision'
        ? await this.provisionOperation(instance)
        : await ops.findOne({ where: { agentId: instance.agentId, type }, order: { requestedAt: 'DESC' } });
    const lastMove = Math.max(instance.updatedAt.getTime(), op?.updatedAt.getTime() ?? 0);
    const idleMs = this.now() - lastMove;
    if (idleMs < this.settings.stuckAfterMs[status]) return null;

    const base = {
      instanceId: instance.id,
      agentId: instance.agentId,
      status,
      idleSeconds: Math.round(idleMs / 1000),
      operationId: op?.id ?? null,
      operationType: op?.type ?? null,
    };
    const since = `in ${status} for ${base.idleSeconds}s`;
    if (!op) return { ...base, action: 'needs_attention', detail: `${since} and no ${type} operation exists` };
    if (op.status === 'succeeded' || op.status === 'cancelled') {
      return { ...base, action: 'needs_attention', detail: `${since} but ${type} operation ${op.id} is ${op.status}` };
    }
    if (type === 'provision' && op.provisioningJobId) {
      const pj = await this.deps.dataSource.getRepository(ProvisioningJob).findOneBy({ id: op.provisioningJobId });
      if (!pj) return { ...base, action: 'needs_attention', detail: `${since}; provisioning job ${op.provisioningJobId} is missing` };
      if (pj.status === 'failed' || pj.status === 'rolled_back') {
        return { ...base, action: 'awaiting_rollback', detail: `${since}; provisioning job ${pj.id} is ${pj.status}` };
      }
    }

    const queue = this.queueFor(type)!;
    const jobId = op.queueJobId ?? jobIds.operation(op.id);
    const job = await queue.getJob(jobId);
    const state = job ? await job.getState() : 'missing';
    if (LIVE_JOB_STATES.includes(state as JobType)) {
      return { ...base, action: 'job_active', detail: `${since}; job ${jobId} is ${state}` };
    }
    if (type === 'provision' && state === 'failed') {
      // A provision that failed for good is rolled back, never retried: the failed-provision listener
      // and its sweep own it (retrying here would race the rollback).
      return { ...base, action: 'awaiting_rollback', detail: `${since}; job ${jobId} failed for good` };
    }

    try {
      await transition(this.deps.dataSource, {
        entity: 'operation',
        id: op.id,
        from: op.status === 'queued' ? ['running', 'failed'] : [op.status],
        to: 'queued',
        allowSame: true,
        reason: `reconcile: instance ${since} with no live job (job ${jobId} ${state}); enqueued again`,
        patch: { queueJobId: jobId, finishedAt: null },
      });
      if (job && (state === 'failed' || state === 'completed')) {
        // The id is still taken, so add() would be ignored: move the same job back to waiting, with
        // a fresh attempt budget so the processor's backoff applies again.
        await job.retry(state, { resetAttemptsMade: true, resetAttemptsStarted: true });
      } else {
        if (job) await job.remove();
        await queue.add(type, await this.jobData(op, instance), { jobId });
      }
    } catch (err) {
      return { ...base, action: 'error', detail: `${since}; could not enqueue ${type} again: ${(err as Error).message}` };
    }
    this.deps.metrics?.reconcileRepairs.inc({ kind: 'requeued' });
    return { ...base, action: 'requeued', detail: `${since}; job ${jobId} was ${state}, ${type} operation ${op.id} enqueued again` };
  }

  private async provisionOperation(instance: Instance): Promise<Operation | null> {
    const pj = await this.deps.dataSource
      .getRepository(ProvisioningJob)
      .findOne({ where: { instanceId: instance.id }, order: { createdAt: 'DESC' } });
    if (!pj) return null;
    return this.deps.dataSource
      .getRepository(Operation)
      .findOne({ where: { provisioningJobId: pj.id, type: 'provision' }, order: { requestedAt: 'DESC' } });
  }

  private async jobData(op: Operation, instance: Instance): Promise<any> {
    if (op.type === 'provision') {
      return {
        operationId: op.id,
        agentId: instance.agentId,
        instanceId: instance.id,
        provisioningJobId: op.provisioningJobId,
      };
    }
    return { operationId: op.id, agentId: op.agentId ?? instance.agentId };
  }

  private ownership(snapshot: Snapshot, deadInstanceIds: Set<string>): Ownership {
    const o: Ownership = {
      serverIds: new Set(),
      deviceIds: new Set(),
      ips: new Set(),
      hostnames: new Set(),
      provisioningInstanceIds: new Set(),
    };
    for (const i of snapshot.instances) {
      if (deadInstanceIds.has(i.id)) continue;
      if (i.serverId) o.serverIds.add(i.serverId);
      if (i.tailscaleDeviceId) o.deviceIds.add(i.tailscaleDeviceId);
      if (i.tailscaleIp) o.ips.add(i.tailscaleIp);
      const hostname = this.instanceHostname(i, snapshot);
      if (hostname) o.hostnames.add(hostname);
      if (i.serverName) o.hostnames.add(i.serverName.toLowerCase());
      if (i.status === 'pending' || i.status === 'provisioning') o.provisioningInstanceIds.add(i.id);
    }
    return o;
  }

  private findOrphans(
    servers: Map<string, HetznerServer>,
    devices: TailscaleDevice[],
    own: Ownership,
    inFlightPjIds: Set<string>,
    previous: ReconcileReport | null,
  ) {
    const now = this.now();
    const graceMs = this.settings.graceSeconds * 1000;
    const firstSeen = new Map<string, string>();
    for (const o of previous?.orphanServers ?? []) firstSeen.set(`s:${o.serverId}`, o.firstSeenAt);
    for (const o of previous?.orphanDevices ?? []) firstSeen.set(`d:${o.deviceId}`, o.firstSeenAt);
    const nowIso = new Date(now).toISOString();
    let withinGrace = 0;
    let inFlight = 0;

    const orphanServers: OrphanServerFinding[] = [];
    // Names of labelled servers that are not orphans: a device with that hostname goes with its server.
    const ownedNames = new Set<string>();
    const inFlightNames = new Set<string>();
    const youngNames = new Set<string>();
    for (const [id, s] of servers) {
      const name = s.name.toLowerCase();
      if (own.serverIds.has(id)) {
        ownedNames.add(name);
        continue;
      }
      const pjId = s.labels[JOB_LABEL] ?? null;
      const instanceId = s.labels[INSTANCE_LABEL];
      // A provision creates the server before it records the id: its job (or instance) vouches for it.
      if ((pjId && inFlightPjIds.has(pjId)) || (instanceId && own.provisioningInstanceIds.has(instanceId))) {
        inFlightNames.add(name);
        inFlight++;
        continue;
      }
      const ageMs = now - Date.parse(s.created);
      if (!(ageMs >= graceMs)) {
        youngNames.add(name);
        withinGrace++;
        continue;
      }
      orphanServers.push({
        serverId: id,
        name: s.name,
        status: s.status,
        created: s.created,
        ageSeconds: Math.round(ageMs / 1000),
        agentId: s.labels[AGENT_LABEL] ?? null,
        provisioningJobId: pjId,
        firstSeenAt: firstSeen.get(`s:${id}`) ?? nowIso,
        action: 'reported',
      });
    }

    const orphanDevices: OrphanDeviceFinding[] = [];
    for (const d of devices) {
      if (!this.carriesTags(d)) continue;
      const hostname = (d.hostname ?? '').toLowerCase();
      if (own.deviceIds.has(d.id) || (d.addresses ?? []).some((a) => own.ips.has(a))) continue;
      if (own.hostnames.has(hostname) || ownedNames.has(hostname)) continue;
      if (inFlightNames.has(hostname)) {
        inFlight++;
        continue;
      }
      const ageMs = now - Date.parse(d.created);
      if (!(ageMs >= graceMs) || youngNames.has(hostname)) {
        withinGrace++;
        continue;
      }
      orphanDevices.push({
        deviceId: d.id,
        hostname: d.hostname,
        addresses: d.addresses ?? [],
        created: d.created,
        ageSeconds: Math.round(ageMs / 1000),
        firstSeenAt: firstSeen.get(`d:${d.id}`) ?? nowIso,
        action: 'reported',
      });
    }
    return { orphanServers, orphanDevices, withinGrace, inFlight };
  }

  private async deleteOrphans(
    servers: OrphanServerFinding[],
    devices: OrphanDeviceFinding[],
    errors: string[],
    log: Logger,
  ): Promise<void> {
    const total = servers.length + devices.length;
    if (total > this.settings.maxDeletesPerPass) {
      const message = `${total} orphans exceed the limit of ${this.settings.maxDeletesPerPass} deletions per pass; nothing deleted (check that tailfleet uses the right database and project)`;
      errors.push(message);
      log.error({ servers: servers.length, devices: devices.length }, `[Reconcile] ${message}`);
      for (const o of [...servers, ...devices]) {
        o.action = 'kept';
        o.detail = 'deletion limit exceeded';
      }
      return;
    }
    await mapLimit(servers, DELETE_CONCURRENCY, async (o) => {
      try {
        // The snapshot may be a few seconds old: ask the database once more right before deleting.
        const owner = await this.serverOwner(o);
        if (owner) {
          o.action = 'kept';
          o.detail = owner;
          return;
        }
        // The label is the licence to delete: read the server once more in case someone took it off.
        const current = await this.deps.hetzner.getServer(Number(o.serverId));
        if (!current) {
          o.action = 'already_gone';
          return;
        }
        if (current.labels?.[MANAGED_LABEL.key] !== MANAGED_LABEL.value) {
          o.action = 'kept';
          o.detail = 'no longer carries the managed-by label';
          return;
        }
        const deleted = await this.deps.hetzner.deleteServer(Number(o.serverId));
        o.action = deleted ? 'deleted' : 'already_gone';
        if (deleted) this.deps.metrics?.reconcileRepairs.inc({ kind: 'orphan_server_deleted' });
        log.warn({ serverId: o.serverId, name: o.name }, `[Reconcile] Orphan server ${o.serverId} deleted`);
      } catch (err) {
        o.action = 'delete_failed';
        o.detail = (err as Error).message;
        errors.push(`delete server ${o.serverId}: ${(err as Error).message}`);
      }
    });
    await mapLimit(devices, DELETE_CONCURRENCY, async (o) => {
      try {
        const owner = await this.deviceOwner(o);
        if (owner) {
          o.action = 'kept';
          o.detail = owner;
          return;
        }
        const deleted = await this.deps.tailscale.deleteDevice(o.deviceId);
        o.action = deleted ? 'deleted' : 'already_gone';
        if (deleted) this.deps.metrics?.reconcileRepairs.inc({ kind: 'orphan_device_deleted' });
        log.warn({ deviceId: o.deviceId, hostname: o.hostname }, `[Reconcile] Orphan device ${o.deviceId} deleted`);
      } catch (err) {
        o.action = 'delete_failed';
        o.detail = (err as Error).message;
        errors.push(`delete device ${o.deviceId}: ${(err as Error).message}`);
      }
    });
  }

  private async serverOwner(o: OrphanServerFinding): Promise<string | null> {
    const db = this.deps.dataSource;
    const owner = await db.getRepository(Instance).findOne({
      where: { serverId: o.serverId, status: Not(In([...TERMINAL_INSTANCE_STATUSES])) },
      select: { id: true },
    });
    if (owner) return `now owned by instance ${owner.id}`;
    if (o.provisioningJobId && /^[0-9a-f-]{36}$/i.test(o.provisioningJobId)) {
      const pj = await db.getRepository(ProvisioningJob).findOne({
        where: { id: o.provisioningJobId, status: In(['queued', 'running']) },
        select: { id: true },
      });
      if (pj) return `provisioning job ${pj.id} is in flight`;
    }
    return null;
  }

  private async deviceOwner(o: OrphanDeviceFinding): Promise<string | null> {
    const qb = this.deps.dataSource
      .getRepository(Instance)
      .createQueryBuilder('i')
      .select('i.id', 'id')
      .where('i.status NOT IN (:...dead)', { dead: [...TERMINAL_INSTANCE_STATUSES] })
      .andWhere('(i.tailscale_device_id = :id OR lower(i.tailscale_hostname) = :h OR lower(i.server_name) = :h)', {
        id: o.deviceId,
        h: o.hostname.toLowerCase(),
      });
    const row = await qb.getRawOne<{ id: string }>();
    return row ? `now owned by instance ${row.id}` : null;
  }

  private instanceHostname(instance: Instance, snapshot: Snapshot): string | null {
    if (instance.tailscaleHostname) return instance.tailscaleHostname.toLowerCase();
    const agent = snapshot.agents.get(instance.agentId);
    if (agent) return agentHostname(agent.name, agent.id);
    return instance.serverName?.toLowerCase() ?? null;
  }

  private carriesTags(d: TailscaleDevice): boolean {
    const tags = d.tags ?? [];
    return this.settings.tags.length > 0 && this.settings.tags.every((t) => tags.includes(t));
  }

  /**
   * Sets the gauges in this process (the worker that ran the pass). An API process reads the stored
   * report at scrape time instead (registerReconcileMetrics).
   */
  publishMetrics(report: ReconcileReport): void {
    const m = this.deps.metrics;
    if (!m) return;
    for (const [kind, value] of Object.entries(reportGauges(report))) m.reconcile.set({ kind }, value);
  }
}

/**
 * The stored reports and the request for a pass: all an API process needs, so it can answer
 * GET/POST /v1/reconcile without cloud clients.
 */
export class ReconcileReports {
  constructor(
    private readonly deps: { dataSource: DataSource; queues: Pick<Queues, 'reconcile'>; keep?: number },
  ) {}

  /** The newest stored report, from whichever process ran it; null before the first pass. */
  async latestReport(): Promise<ReconcileReport | null> {
    const row = await this.repo().findOne({ where: {}, order: { id: 'DESC' } });
    return row ? toReport(row) : null;
  }

  /**
   * Queues one pass now (POST /v1/reconcile). A manual pass that is still queued is reused rather
   * than stacking a second one behind it. The Operation row comes first so a failed enqueue leaves
   * a visible failed operation instead of nothing.
   */
  async requestPass(): Promise<{ operation: Operation; created: boolean }> {
    const ops = this.deps.dataSource.getRepository(Operation);
    const pending = await ops.findOne({ where: { type: 'reconcile', status: 'queued' }, order: { requestedAt: 'DESC' } });
    if (pending) {
      const job = pending.queueJobId ? await this.deps.queues.reconcile.getJob(pending.queueJobId) : undefined;
      if (job && LIVE_JOB_STATES.includes((await job.getState()) as JobType)) return { operation: pending, created: false };
      // Its job is gone (Redis lost it): close it so it does not look queued forever.
      await transition(this.deps.dataSource, {
        entity: 'operation',
        id: pending.id,
        from: ['queued'],
        to: 'failed',
        reason: 'reconcile job no longer in the queue; superseded by a new request',
        operationId: pending.id,
        patch: { error: 'Job lost from the queue; superseded by a new reconcile request', finishedAt: new Date() },
      }).catch(() => undefined);
    }
    const { operation } = await insertOperation(this.deps.dataSource, { type: 'reconcile', reason: 'reconcile pass requested' });
    const jobId = jobIds.operation(operation.id);
    try {
      await this.deps.queues.reconcile.add('reconcile', { operationId: operation.id, trigger: 'manual' }, { jobId, attempts: 1 });
    } catch (err) {
      await transition(this.deps.dataSource, {
        entity: 'operation',
        id: operation.id,
        from: ['queued'],
        to: 'failed',
        reason: 'could not enqueue the reconcile pass',
        operationId: operation.id,
        patch: { error: `Queue unavailable: ${(err as Error).message}`, finishedAt: new Date() },
      }).catch(() => undefined);
      throw err;
    }
    await ops.update({ id: operation.id }, { queueJobId: jobId });
    operation.queueJobId = jobId;
    return { operation, created: true };
  }

  async save(report: ReconcileReport): Promise<string> {
    const repo = this.repo();
    const row = await repo.save(
      repo.create({
        trigger: report.trigger,
        operationId: report.operationId,
        startedAt: new Date(report.startedAt),
        finishedAt: new Date(report.finishedAt),
        report: report as unknown as Record<string, unknown>,
      }),
    );
    await repo
      .createQueryBuilder()
      .delete()
      .where(`id <= (SELECT max(id) - :keep FROM ${repo.metadata.tableName})`, { keep: this.deps.keep ?? 200 })
      .execute();
    return String(row.id);
  }

  private repo() {
    return this.deps.dataSource.getRepository(ReconcileReportRecord);
  }
}

/** Metric values of a report: what the latest pass found, and what it repaired. */
export function reportGauges(report: ReconcileReport): Record<string, number> {
  return {
    orphan_servers: report.summary.orphanServers,
    orphan_devices: report.summary.orphanDevices,
    drifted_instances: report.summary.driftedInstances,
    stuck_instances: report.summary.stuckInstances,
    repairs: report.summary.repairs,
    errors: report.summary.errors,
  };
}

function toReport(row: ReconcileReportRecord): ReconcileReport {
  return { ...(row.report as unknown as ReconcileReport), id: String(row.id) };
}

function firstIpv4(addresses: string[] | undefined): string | null {
  return addresses?.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)) ?? addresses?.[0] ?? null;
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(workers);
}
