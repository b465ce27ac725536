import type { Job } from 'bullmq';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { withAdvisoryLock } from '../db/advisory-lock';
import type { Operation } from '../entities';
import { UnavailableError } from '../errors';
import type { ReconcileTrigger } from '../entities/reconcile-report.entity';
import { reviewFindings } from './attention';
import { checkDevice, checkServer } from './drift';
import { deleteOrphans, findOrphans } from './orphans';
import { judgesDevice, ownership } from './ownership';
import { LIVE_JOB_STATES } from './queue-state';
import { reportGauges, type ReconcileReports } from './reports';
import { checkStuck, TRANSITIONAL } from './stuck';
import type { DriftFinding, PassContext, ReconcileReport, ReconcilerDeps, ReconcilerSettings, Snapshot, StuckFinding } from './types';

/**
 * Drift reconciler and orphan sweeper.
 *
 * The database says what should exist, the clouds say what does. One pass reads the database first,
 * then lists the labelled servers and the tailnet devices (a bounded number of requests: one per
 * 50 servers, one device listing), compares, and repairs:
 * - a running/stopped instance whose server was powered off, on or deleted behind tailfleet's back
 *   gets its recorded state corrected (guarded transitions with events) — drift.ts;
 * - an instance stuck in a transitional state with no live job gets its operation enqueued again — stuck.ts;
 * - servers and devices nobody owns (orphans) older than a grace period are reported, and deleted
 *   when configured to — orphans.ts.
 *
 * The database is read before the clouds on purpose: every repair is a guarded transition from the
 * status seen in that snapshot, so an operation that moved the instance after the snapshot (and
 * whose effect the listing may already show) makes the repair lose the race instead of undoing it.
 */

// Arbitrary constant, distinct from the migration lock: one reconcile pass at a time across processes.
const RECONCILE_LOCK_KEY = 7_412_903_612;

/** Another pass holds the lock for longer than lockWaitMs. Transient: the job may try again. */
export class ReconcileBusyError extends UnavailableError {
  override readonly code = 'reconcile_busy';
  constructor() {
    super('Another reconcile pass is running');
    this.name = 'ReconcileBusyError';
  }
}

export class Reconciler {
  private readonly ctx: PassContext;
  private readonly reports: ReconcileReports;

  constructor(private readonly deps: ReconcilerDeps) {
    const settings: Required<ReconcilerSettings> = {
      maxDeletesPerPass: 20,
      lockWaitMs: 30_000,
      ...deps.settings,
    };
    this.ctx = { deps, guard: deps.guard, settings, now: deps.now ?? Date.now };
    this.reports = deps.reports;
  }

  /** The newest stored report, from whichever process ran it; null before the first pass. */
  latestReport(): Promise<ReconcileReport | null> {
    return this.reports.latestReport();
  }

  /** Queues one pass now (POST /v1/reconcile). */
  requestPass(opts: { requestedBy?: string } = {}): Promise<{ operation: Operation; created: boolean }> {
    return this.reports.requestPass(opts);
  }

  /** Runs one full pass and stores its report. Throws when the clouds cannot be listed. */
  async runPass(opts: { trigger?: ReconcileTrigger; operationId?: string | null } = {}): Promise<ReconcileReport> {
    const pass = () => this.pass(opts.trigger ?? 'manual', opts.operationId ?? null);
    const run = await withAdvisoryLock(this.deps.dataSource, RECONCILE_LOCK_KEY, pass, { waitMs: this.ctx.settings.lockWaitMs });
    if (!run.locked) throw new ReconcileBusyError();
    return run.value;
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

  private async pass(trigger: ReconcileTrigger, operationId: string | null): Promise<ReconcileReport> {
    const { ctx } = this;
    const { settings } = ctx;
    const startedAt = new Date(ctx.now());
    const log = this.deps.logger.child({ trigger, operationId });
    const errors: string[] = [];

    const snapshot = await this.snapshot();
    // Fleet.listServers checks every listed server's labels again: no server without the label, or of
    // another fleet, is ever judged, whatever the API (or a future selector bug) returns — and the
    // default fleet's selector cannot leave out other fleets (src/fleet/fleet.ts). Pages may overlap
    // when servers are deleted while listing, so ids are de-duplicated.
    // Every project is listed (Hetzner's ids are global, so one map holds them all); a server's
    // project decides where a later read or delete of it goes.
    const projects = this.deps.projects;
    const [perProject, devices] = await Promise.all([
      Promise.all(
        (projects?.list ?? [{ name: null, client: this.deps.hetzner }]).map(async (p) =>
          (await this.deps.fleet.listServers(p.client)).map((s) => ({ s, project: p.name })),
        ),
      ),
      this.deps.tailscale.listDevices(),
    ]);
    const servers = new Map<string, HetznerServer>();
    const serverProjects = new Map<string, string>();
    for (const { s, project } of perProject.flat()) {
      servers.set(String(s.id), s);
      if (project !== null) serverProjects.set(String(s.id), project);
    }
    const inProject = <T>(project: string | null | undefined, fn: () => Promise<T>): Promise<T> =>
      projects ? projects.within(project && projects.names.includes(project) ? project : null, fn) : fn();
    const devicesById = new Map(devices.map((d) => [d.id, d]));
    // Candidates to take over a lost device id: tagged, this fleet's, enrolled and not recorded by any instance.
    const unclaimedByHostname = new Map<string, TailscaleDevice>();
    for (const d of devices) {
      if (!judgesDevice(ctx, d) || snapshot.claimedDeviceIds.has(d.id) || !d.addresses?.length) continue;
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
            (await inProject(instance.hetznerProject, () => checkServer(ctx, instance, servers, snapshot, deadInstanceIds))) ??
            (await checkDevice(ctx, instance, devicesById, unclaimedByHostname, snapshot));
          if (found) drift.push(found);
          if (found?.action === 'error') errors.push(`instance ${instance.id}: ${found.detail}`);
        } else if ((TRANSITIONAL as readonly string[]).includes(instance.status)) {
          const found = await checkStuck(ctx, instance);
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
    const { orphanServers, orphanDevices, withinGrace, inFlight } = findOrphans(
      ctx,
      servers,
      devices,
      ownership(this.deps.fleet, snapshot, deadInstanceIds),
      inFlightPjIds,
      previous,
    );
    if (settings.orphans === 'delete') {
      await deleteOrphans(ctx, orphanServers, orphanDevices, errors, log, {
        operationId,
        devices: devicesById,
        servers,
        inProjectOf: (serverId, fn) => inProject(serverProjects.get(serverId), fn),
      });
    }
    const attention = await reviewFindings(ctx, snapshot, { servers, devices: devicesById }, errors, log);

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

    const finishedAt = new Date(ctx.now());
    const report: ReconcileReport = {
      id: null,
      trigger,
      operationId,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      settings: { orphans: settings.orphans, graceSeconds: settings.graceSeconds },
      observed: {
        servers: servers.size,
        devices: devices.length,
        taggedDevices: devices.filter((d) => judgesDevice(ctx, d)).length,
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
        needsAttention: attention.filter((a) => a.state === 'open').length,
        errors: errors.length,
      },
      drift,
      stuck,
      orphanServers,
      orphanDevices,
      attention,
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
    const repos = this.deps.repositories;
    const instances = await repos.instances.listLive();
    const agents = await repos.agents.findByIds(instances.map((i) => i.agentId));
    const activePjIds = await repos.provisioningJobs.activeIds();
    const ops = await repos.operations.listActive();
    const activeOps = new Map<string, Operation[]>();
    for (const op of ops) {
      if (!op.agentId) continue;
      activeOps.set(op.agentId, [...(activeOps.get(op.agentId) ?? []), op]);
    }
    const claimedDeviceIds = new Set(instances.map((i) => i.tailscaleDeviceId).filter((d): d is string => !!d));
    return { instances, agents, activePjIds, activeOps, claimedDeviceIds };
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
}
