import { CloudApiError, mayHaveTakenEffect } from '../clients/errors';
import type { CreateServerOptions, HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import type { TransitionRequest } from '../db/transitions';
import type { Agent, Instance, ProvisioningJob } from '../entities';
import { StateConflictError } from '../errors';
import { hostnameMatches, tailnetIpv4 } from '../fleet/devices';
import type { GuardContext, OwnershipGuard } from '../fleet/ownership-guard';
import { jobServerTerms, serverLabels } from '../fleet/server-labels';
import type { Logger } from '../lib/logger';
import { mintJobAuthKey, revokeJobAuthKeys } from './auth-keys';
import { buildUserData, mergeUserData, USER_DATA_MAX_BYTES, type ReporterInput } from './cloud-init';
import { generateToken } from '../lib/tokens';
import { waitForAgentDevice } from './enrollment';
import { errorMessage, guarded, move, moveTogether } from './guarded-moves';
import { requireAgent, requireInstance, requireInstanceForUpdate, requireJob } from './records';
import { runningServer } from './servers';
import { silentReporter, type StepReporter } from './step-reporter';
import type { OperationContext, WorkflowDeps } from './workflow-deps';
import { recordEvent } from '../db/transitions';
import type { PlacementRefusal } from '../entities';
import { HetznerProjects, type HetznerProject, type ProjectLoad } from '../clients/hetzner/projects';
import { createPlaced, describeRefusal, MemoryCapacityStore, placementsOf, type Placement, type PlacementDeps } from './placement';

export interface ProvisionInput extends OperationContext {
  provisioningJobId: string;
  queueJobId?: string;
}

/** A workflow that creates servers: the guard of its destructive calls and the placement of its creates (provision, wake). */
export abstract class PlacingWorkflow {
  protected readonly guard: OwnershipGuard;
  protected readonly placement: PlacementDeps;

  constructor(protected readonly deps: WorkflowDeps) {
    this.guard = deps.guard;
    this.placement = placementDepsOf(deps);
  }

  /**
   * Records where the instance's server is about to be created, or throws when the instance changed
   * first: another delivery of this job chose before this one (or another operation took the
   * instance), a lost race, so this delivery creates nothing and hands back.
   */
  protected async choosePlacement(instanceId: string, placement: { project: string; location: string; serverType: string }): Promise<void> {
    if (!(await this.deps.repositories.instances.choosePlacement(instanceId, placement))) {
      throw new StateConflictError(`Instance ${instanceId} changed before its server was created; not creating one`, { lostRace: true });
    }
  }
}

/**
 * Creates an agent's server, waits for it to run and join the tailnet, and records each step as a
 * guarded transition (src/db/transitions). It may run again after a crash at any point — queues
 * deliver at least once — and continues from where the last run got to.
 */
export class ProvisionWorkflow extends PlacingWorkflow {

  async provision(input: ProvisionInput, r: StepReporter = silentReporter): Promise<void> {
    const { provisioningJobId } = input;
    const operationId = input.operationId ?? null;
    const job = await requireJob(this.deps.repositories, provisioningJobId);
    const log = this.deps.logger.child({
      agentId: job.agentId,
      operationId,
      provisioningJobId,
      instanceId: job.instanceId,
      ...(input.queueJobId ? { queueJobId: input.queueJobId } : {}),
    });

    if (job.status === 'succeeded') {
      log.info(`[Lifecycle] Provisioning job ${job.id} already succeeded`);
      await r.step('done', 100, 'already provisioned');
      return;
    }
    if (job.status === 'rolled_back') {
      throw new StateConflictError(`Provisioning job ${job.id} was rolled back; it cannot run again`);
    }

    // A scope of its own: the project may change as creates are refused.
    return this.placement.projects.within(undefined, () => this.run(input, job, operationId, log, r));
  }

  private async run(input: ProvisionInput, job: ProvisioningJob, operationId: string | null, log: Logger, r: StepReporter): Promise<void> {
    let step = 'prepare';
    try {
      await r.step(step, 5, 'marking the instance as provisioning');
      const { agent, instance, hostname } = await this.beginProvision(job, operationId, log);
      // Where an earlier attempt chose to create: its server, if any, is looked for there.
      if (instance.hetznerProject) this.placement.projects.use(instance.hetznerProject);

      step = 'find-server';
      await r.step(step, 10, 'looking for a server made by an earlier attempt');
      let server = await this.findProvisionedServer(instance, job, log);
      let actionIds: number[] = [];
      if (server) {
        await r.step(step, 30, `resuming with server ${server.id}`);
      } else {
        step = 'create-server';
        await r.step(step, 20, 'creating an auth key and the server');
        ({ server, actionIds } = await this.createServer(agent, instance, job, hostname, operationId, log));
        await r.step(step, 30, `server ${server.id} created`);
      }
      const serverId = server.id;

      step = 'wait-server';
      await r.step(step, 40, `waiting for server ${serverId} to run`);
      server = await this.waitForServerRunning(serverId, actionIds, log);
      // The row as recorded: whether an earlier attempt already enrolled the device.
      const current = await this.recordServer(instance.id, server);

      step = 'wait-enrollment';
      await r.step(step, 60, `waiting for ${hostname} to join the tailnet`);
      if (current.tailscaleDeviceId) {
        log.info({ deviceId: current.tailscaleDeviceId }, '[Lifecycle] Tailnet device already recorded, skipping enrollment');
      } else {
        const device = await waitForAgentDevice({ ...this.deps, guard: this.guard }, hostname, guardContext(job, operationId), log);
        await this.recordDevice(instance.id, device);
        log.info({ deviceId: device.id }, `[Tailscale] Device ${device.id} enrolled as ${hostname}`);
      }

      step = 'finish';
      await r.step(step, 90, 'marking the instance as running');
      // With the operation's success when the runner gave `finish`; the auth keys are tidied after.
      const { finish } = input;
      const moves: TransitionRequest[] = [
        {
          entity: 'instance',
          id: instance.id,
          from: ['provisioning'],
          to: 'running',
          reason: 'provisioned',
          operationId,
          patch: { startedAt: new Date(), stoppedAt: null, error: null },
        },
        { entity: 'agent', id: agent.id, from: ['provisioning'], to: 'active', reason: 'provisioned', operationId },
        {
          entity: 'provisioning_job',
          id: job.id,
          from: ['running'],
          to: 'succeeded',
          reason: 'provisioned',
          operationId,
          patch: { finishedAt: new Date(), error: null, failedStep: null },
        },
      ];
      if (finish) await guarded(() => finish(moves, 'done'));
      else await moveTogether(this.deps.dataSource, moves);
      await revokeJobAuthKeys(
        { ...this.deps, guard: this.guard },
        { provisioningJobId: job.id, hostname },
        guardContext(job, operationId),
        log,
        { keepSole: true },
      );
      await r.step('done', 100, `server ${serverId} running and enrolled`);
      log.info({ serverId }, `[Lifecycle] Agent ${agent.id} provisioned successfully`);
    } catch (err) {
      // A lost race is the other operation's story to tell; writing it onto the job would only hide the real state.
      if (err instanceof StateConflictError && err.lostRace) log.warn({ step }, `[Lifecycle] Provision stopped: ${err.message}`);
      else await this.recordProvisionFailure(job, step, err, log);
      throw err;
    }
  }

  private async beginProvision(
    job: ProvisioningJob,
    operationId: string | null,
    log: Logger,
  ): Promise<{ agent: Agent; instance: Instance; hostname: string }> {
    const repos = this.deps.repositories;
    return this.deps.dataSource.transaction(async (m) => {
      // Locked, so the status checked here is the one the moves below start from.
      const instance = await requireInstanceForUpdate(repos, job.instanceId, m);
      const agent = await requireAgent(repos, job.agentId, m);
      const reason = 'provision started';

      if (instance.status === 'provisioning') {
        log.info('[Lifecycle] Instance already provisioning, resuming');
      } else if (instance.status === 'pending') {
        await move(m, { entity: 'instance', id: instance.id, from: ['pending'], to: 'provisioning', reason, operationId });
        instance.status = 'provisioning';
      } else {
        throw new StateConflictError(`Instance ${instance.id} is ${instance.status}; it cannot be provisioned`);
      }

      if (agent.status === 'draft' || agent.status === 'error') {
        await move(m, { entity: 'agent', id: agent.id, from: [agent.status], to: 'provisioning', reason, operationId });
      } else if (agent.status !== 'provisioning') {
        throw new StateConflictError(`Agent ${agent.id} is ${agent.status}; it cannot be provisioned`);
      }

      if (job.status === 'running') {
        await repos.provisioningJobs.incrementAttempts(job.id, m);
      } else {
        await move(m, {
          entity: 'provisioning_job',
          id: job.id,
          from: [job.status === 'failed' ? 'failed' : 'queued'],
          to: 'running',
          reason: job.status === 'failed' ? 'provision retried' : reason,
          operationId,
          patch: { attempts: job.attempts + 1, startedAt: job.startedAt ?? new Date() },
        });
      }

      // Fixed before any cloud call, so every later attempt, destroy and rollback looks for the same device.
      const hostname = this.deps.fleet.hostnameOf(instance, agent);
      if (instance.tailscaleHostname !== hostname || instance.serverName === null) {
        const names = { tailscaleHostname: hostname, serverName: instance.serverName ?? hostname };
        await repos.instances.setNames(instance.id, names, m);
        Object.assign(instance, names);
      }
      // The locked row with what this transaction wrote: nobody else can have changed it meanwhile.
      return { agent, instance, hostname };
    });
  }

  /**
   * A server made by an earlier attempt of this job: the recorded id first, else the job label. The
   * label lookup keeps a retried job from making a second server when the create call succeeded but
   * its answer, or the database write after it, was lost.
   */
  private async findProvisionedServer(instance: Instance, job: ProvisioningJob, log: Logger): Promise<HetznerServer | null> {
    const { hetzner } = this.deps;
    if (instance.serverId) {
      const server = await hetzner.getServer(Number(instance.serverId));
      if (server) {
        log.info({ serverId: server.id }, `[Lifecycle] Server ${server.id} already created, resuming`);
        return server;
      }
      throw new StateConflictError(
        `Server ${instance.serverId} recorded for instance ${instance.id} no longer exists; roll the provision back`,
      );
    }
    // With several projects, a project is recorded before any create: none recorded, nothing was
    // created anywhere, and no project's budget is spent looking.
    if (instance.hetznerProject === null && !this.placement.projects.single) return null;
    const found = await this.deps.fleet.listServers(hetzner, jobServerTerms({ agentId: job.agentId, provisioningJobId: job.id }));
    if (found.length === 0) return null;
    const [server, ...extra] = found.sort((a, b) => a.id - b.id);
    for (const other of extra) {
      // Only two attempts of one job creating at the same moment get here; the extras carry our job label and are unused.
      log.warn({ serverId: other.id }, `[Lifecycle] Deleting duplicate server ${other.id} of job ${job.id}`);
      await this.guard.deleteServer(other, { agentId: job.agentId, provisioningJobId: job.id }, guardContext(job, null));
    }
    log.info({ serverId: server.id }, `[Lifecycle] Found server ${server.id} by its job label, resuming`);
    await this.recordServer(instance.id, server);
    return server;
  }

  private async createServer(
    agent: Agent,
    instance: Instance,
    job: ProvisioningJob,
    hostname: string,
    operationId: string | null,
    log: Logger,
  ): Promise<{ server: HetznerServer; actionIds: number[] }> {
    const { hetzner, settings } = this.deps;
    const authKey = await mintJobAuthKey({ ...this.deps, guard: this.guard }, { provisioningJobId: job.id, hostname }, guardContext(job, null), log);
    // The machine's own credential for its activity reporter; an earlier attempt's is revoked with it.
    const publicUrl = settings.publicUrl ?? null;
    const reporter =
      publicUrl !== null && agent.spec?.reporter !== false
        ? { url: publicUrl, agentId: agent.id, token: await this.deps.repositories.tokens.issueAgentToken(agent.id, generateToken) }
        : undefined;

    let created;
    try {
      const loads = await projectLoads(this.deps, this.placement);
      const placed = await createPlaced(this.placement, {
        placements: placementsOf(agent.spec ?? { location: instance.location ?? settings.location, serverType: instance.serverType }, settings),
        projects: projectOrder(this.placement.projects, loads, instance.hetznerProject),
        choose: (project, place) => this.choosePlacement(instance.id, { project, ...place }),
        create: (place) =>
          hetzner.createServer(
            serverCreateOptions(
              { fleet: this.deps.fleet, settings },
              { agent, instance, provisioningJobId: job.id, hostname, authKey: authKey.key, reporter, placement: place },
            ),
          ),
        leftBehind: () => this.deps.fleet.listServers(hetzner, jobServerTerms({ agentId: job.agentId, provisioningJobId: job.id })),
        refused: (refusal, next) => recordPlacementRefusal(this.deps, { instance, status: 'provisioning', operationId }, refusal, next),
      });
      if (placed.found) {
        log.info({ serverId: placed.found.id }, `[Lifecycle] Found server ${placed.found.id} by its job label, resuming`);
        await this.recordServer(instance.id, placed.found);
        return { server: placed.found, actionIds: [] };
      }
      if (placed.refusals.length > 0) await recordLanding(this.deps, { instance, status: 'provisioning', operationId }, placed);
      created = placed.created!;
    } catch (err) {
      // A refused create, or an instance that moved on before the create (StateConflictError from choosing a place).
      if (!mayHaveTakenEffect(err) || err instanceof StateConflictError) {
        // No server will ever use this key: delete it rather than leave a live credential until it expires.
        const evidence = { recordedIds: [authKey.id], provisioningJobId: job.id, hostname };
        await this.guard.revokeAuthKey(authKey.id, evidence, guardContext(job, null)).catch((cleanupErr: unknown) => {
          log.warn({ err: cleanupErr, authKeyId: authKey.id }, `[Tailscale] Could not delete unused auth key ${authKey.id}`);
        });
      }
      if (err instanceof CloudApiError && err.code === 'uniqueness_error') {
        // The name is the hostname, so a parallel attempt of this job most likely created it first: continue with that one.
        const theirs = await this.findProvisionedServer(await requireInstance(this.deps.repositories, instance.id), job, log);
        if (theirs) return { server: theirs, actionIds: [] };
      }
      throw err;
    }

    const { server } = created;
    const actionIds = [created.action.id, ...created.nextActions.map((a) => a.id)];
    try {
      await this.recordServer(instance.id, server);
    } catch (err) {
      if (err instanceof StateConflictError) {
        // Destroy, rollback or a parallel attempt moved the instance while the server was being made:
        // nobody will look for this server through the instance, so it must not outlive this attempt.
        await this.discardServer(job, server, actionIds, authKey.id, hostname, log);
      }
      throw err;
    }
    log.info({ serverId: server.id }, `[Lifecycle] Server ${server.id} created and recorded`);
    return { server, actionIds };
  }

  /**
   * Undoes a create that lost its instance. The key goes first so the server cannot join any more;
   * the delete waits for the create actions (the server is locked until they finish); a device that
   * joined meanwhile is removed by hostname, but only when the instance is no longer provisioning —
   * otherwise the hostname belongs to the attempt that won.
   */
  private async discardServer(
    job: ProvisioningJob,
    server: HetznerServer,
    actionIds: number[],
    authKeyId: string,
    hostname: string,
    log: Logger,
  ): Promise<void> {
    const { hetzner, tailscale } = this.deps;
    const { instanceId } = job;
    const serverId = server.id;
    const ctx = guardContext(job, null);
    log.warn({ serverId }, `[Lifecycle] Instance changed during create; deleting server ${serverId}`);
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (cleanupErr) {
        log.error({ err: cleanupErr, serverId }, `[Lifecycle] Could not ${what} of discarded server ${serverId}`);
      }
    };
    await attempt('delete the auth key', () =>
      this.guard.revokeAuthKey(authKeyId, { recordedIds: [authKeyId], provisioningJobId: job.id, hostname }, ctx),
    );
    await attempt('wait for the create actions', () =>
      hetzner.waitForActions(actionIds, { timeoutMs: this.deps.settings.actionTimeoutMs }),
    );
    // The id is the one this attempt's create call returned; the labels are the ones it sent.
    await attempt('delete', () =>
      this.guard.deleteServer(server, { agentId: job.agentId, provisioningJobId: job.id, recordedIds: [serverId] }, ctx),
    );
    const current = await requireInstance(this.deps.repositories, instanceId);
    if (current.status !== 'provisioning') {
      await attempt('delete the device', async () => {
        for (const d of (await tailscale.listDevices()).filter((x) => hostnameMatches(x, hostname))) {
          await this.guard.deleteDevice(d, { hostname, tags: tailscale.tags }, ctx);
        }
      });
    }
  }

  private async waitForServerRunning(serverId: number, actionIds: number[], log: Logger): Promise<HetznerServer> {
    const { hetzner } = this.deps;
    const timeoutMs = this.deps.settings.actionTimeoutMs;
    if (actionIds.length > 0) await hetzner.waitForActions(actionIds, { timeoutMs });
    const server = await runningServer(hetzner, serverId, timeoutMs, () =>
      log.info({ serverId }, `[Lifecycle] Server ${serverId} is off, powering it on`),
    );
    if (!server) throw new StateConflictError(`Server ${serverId} disappeared while provisioning; roll the provision back`);
    return server;
  }

  /**
   * Its own statement, run right after the create call, so a crash at any later point leaves the id
   * where rollback and destroy look. The repository guards it: only while pending/provisioning, never
   * over a different id (the same id again is a no-op success for resumed runs).
   */
  private async recordServer(instanceId: string, server: HetznerServer): Promise<Instance> {
    return guarded(() =>
      this.deps.repositories.instances.setServer(instanceId, {
        serverId: String(server.id),
        serverName: server.name,
        serverIp: server.public_net.ipv4?.ip ?? null,
      }),
    );
  }

  private async recordDevice(instanceId: string, device: TailscaleDevice): Promise<void> {
    await guarded(() =>
      this.deps.repositories.instances.setDevice(instanceId, { tailscaleDeviceId: device.id, tailscaleIp: tailnetIpv4(device) }),
    );
  }

  /** The reason stays on job and instance for the API and the rollback; statuses are left to retries and rollback. */
  private async recordProvisionFailure(job: ProvisioningJob, step: string, err: unknown, log: Logger): Promise<void> {
    const message = errorMessage(err);
    log.error({ err, step }, `[Lifecycle] Provision failed at ${step}: ${message}`);
    const repos = this.deps.repositories;
    try {
      // Instance before job: the order every transition takes its rows in (instance, agent, job), so a
      // failing attempt cannot deadlock with a concurrent one recording its server.
      await this.deps.dataSource.transaction(async (m) => {
        await repos.instances.recordError(job.instanceId, 'provisioning', message, m);
        await repos.provisioningJobs.recordFailure(job.id, { error: message, failedStep: step }, m);
      });
    } catch (dbErr) {
      log.error({ err: dbErr }, '[Lifecycle] Could not record the provision failure');
    }
  }
}

/**
 * Everything a server of an agent is created with, from the agent's stored spec (the environment's
 * settings for agents created before specs were stored): type, location, image, SSH keys, the
 * application's labels beside tailfleet's own (which win), and the application's cloud-init merged
 * with the tailnet join. `image` overrides the spec's (a wake from a snapshot). The result carries the
 * auth key: hand it to the Hetzner client and nowhere else.
 */
export function serverCreateOptions(
  deps: Pick<WorkflowDeps, 'fleet' | 'settings'>,
  input: {
    agent: Pick<Agent, 'id' | 'spec' | 'labels'>;
    instance: Pick<Instance, 'id' | 'serverType' | 'image' | 'location' | 'serverName'>;
    provisioningJobId: string;
    hostname: string;
    authKey: string;
    /** The activity reporter to install, with the agent's credential (a secret, like the auth key). */
    reporter?: ReporterInput;
    image?: string;
    /** Where to create it (a fallback place); default the instance's recorded location and type. */
    placement?: Placement;
  },
): CreateServerOptions {
  const { agent, instance, hostname } = input;
  const { settings } = deps;
  const spec = agent.spec;
  const sshKeys = spec ? spec.sshKeys : settings.sshKeys;
  const userData = mergeUserData(buildUserData({ authKey: input.authKey, hostname, reporter: input.reporter }), spec?.userData);
  const size = Buffer.byteLength(userData);
  if (size > USER_DATA_MAX_BYTES) {
    throw new StateConflictError(`The agent's user data merged with the tailnet join is ${size} bytes; Hetzner takes at most ${USER_DATA_MAX_BYTES}`);
  }
  return {
    name: instance.serverName ?? hostname,
    serverType: input.placement?.serverType ?? (instance.serverType || spec?.serverType || settings.serverType),
    image: input.image ?? (instance.image || spec?.image || settings.image),
    location: input.placement?.location ?? instance.location ?? spec?.location ?? settings.location,
    sshKeys: sshKeys.length > 0 ? sshKeys : undefined,
    userData,
    publicIpv4: spec?.publicIpv4 ?? settings.publicIpv4 ?? true,
    labels: {
      ...(agent.labels ?? {}),
      ...serverLabels(deps.fleet, { agentId: agent.id, provisioningJobId: input.provisioningJobId, instanceId: instance.id }),
    },
  };
}

/** The placement settings of the workflows: the projects (the only client as `default` without them) and the cooldown store. */
export function placementDepsOf(deps: WorkflowDeps): PlacementDeps {
  return {
    projects: deps.projects ?? new HetznerProjects([{ name: 'default', client: deps.hetzner, maxServers: null }]),
    capacity: deps.capacity ?? new MemoryCapacityStore(),
    cooldownMs: deps.settings.placementCooldownMs ?? 600_000,
    logger: deps.logger,
  };
}

/** What a project choice weighs: servers counted per project and the projects marked full (nothing to read with one project). */
export async function projectLoads(deps: Pick<WorkflowDeps, 'repositories'>, placement: PlacementDeps): Promise<Map<string, ProjectLoad>> {
  const loads = new Map<string, ProjectLoad>();
  const { projects } = placement;
  if (projects.single) return loads;
  const [counts, refused] = await Promise.all([
    deps.repositories.instances.countServersByProject(),
    placement.capacity.refused([], projects.names).catch(() => ({ places: new Set<string>(), projects: new Set<string>() })),
  ]);
  for (const name of projects.names) loads.set(name, { servers: counts.get(name) ?? 0, full: refused.projects.has(name) });
  return loads;
}

/** The projects in the order a create tries them: the recorded one first (a retry looks where it may have created), then by headroom. */
export function projectOrder(projects: HetznerProjects, loads: Map<string, ProjectLoad>, recorded: string | null): HetznerProject[] {
  const ranked = projects.rank(loads);
  const first = recorded === null ? undefined : ranked.find((p) => p.name === recorded);
  return first ? [first, ...ranked.filter((p) => p !== first)] : ranked;
}

/** A refused create on the instance's record and in its events, saying what comes next. */
export async function recordPlacementRefusal(
  deps: Pick<WorkflowDeps, 'dataSource' | 'repositories'>,
  at: PlacementAt,
  refusal: PlacementRefusal,
  next: { project: string; placement: Placement } | null,
): Promise<void> {
  const then = next ? `; trying ${next.placement.location}/${next.placement.serverType} in project ${next.project}` : '; no placement left';
  await deps.repositories.instances.addPlacementRefusal(at.instance.id, refusal);
  await recordPlacementEvent(deps, at, `placement refused: ${describeRefusal(refusal)} (${refusal.message})${then}`);
}

type PlacementAt = { instance: Pick<Instance, 'id' | 'agentId'>; status: string; operationId: string | null };

/** An event on the instance about where its server goes; its status does not change. */
function recordPlacementEvent(deps: Pick<WorkflowDeps, 'dataSource'>, at: PlacementAt, reason: string): Promise<unknown> {
  return recordEvent(deps.dataSource, {
    entityType: 'instance',
    entityId: at.instance.id,
    agentId: at.instance.agentId,
    fromStatus: at.status,
    toStatus: at.status,
    reason,
    operationId: at.operationId,
  });
}

/** Where a create landed after refusals, in the instance's events. */
export async function recordLanding(
  deps: Pick<WorkflowDeps, 'dataSource'>,
  at: PlacementAt,
  placed: { project: string; placement: Placement; refusals: PlacementRefusal[] },
): Promise<void> {
  const n = placed.refusals.length;
  const where = `${placed.placement.location}/${placed.placement.serverType} in project ${placed.project}`;
  await recordPlacementEvent(deps, at, `placed in ${where} after ${n} refused placement${n === 1 ? '' : 's'}`);
}

/** A provision's guarded calls: the audit events go on its instance (the operation id, when known, on the event). */
function guardContext(job: ProvisioningJob, operationId: string | null): GuardContext {
  return { operation: 'provision', operationId, agentId: job.agentId, instanceId: job.instanceId };
}
