import type { DataSource, EntityManager } from 'typeorm';
import { CloudApiError } from '../clients/errors';
import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import { StateConflictError as DbStateConflictError, RecordNotFoundError } from '../db/errors';
import { InstanceRepository } from '../db/instance.repository';
import { isUuid } from '../db/uuid';
import { transition, transitionTogether, type Db, type TransitionRequest } from '../db/transitions';
import {
  Agent,
  Event,
  Instance,
  LIVE_INSTANCE_STATUSES,
  ProvisioningJob,
  type AgentStatus,
  type EventEntityType,
  type InstanceStatus,
} from '../entities';
import type { Logger } from '../lib/logger';
import { agentHostname, buildUserData } from './cloud-init';
import { NotFoundError, StateConflictError } from './errors';
import { agentServerSelector, jobServerSelector, serverLabels } from './server-labels';

/** Progress sink for one job: the processor forwards it to `job.updateProgress` and `job.log`. */
export interface StepReporter {
  step(name: string, progress: number, message?: string): Promise<void>;
}

export interface LifecycleSettings {
  serverType: string;
  image: string;
  location: string;
  sshKeys: string[];
  shutdownTimeoutMs: number;
  enrollmentTimeoutMs: number;
  actionTimeoutMs: number;
}

export interface LifecycleDeps {
  dataSource: DataSource;
  hetzner: HetznerClient;
  tailscale: TailscaleClient;
  logger: Logger;
  settings: LifecycleSettings;
}

export interface OperationContext {
  operationId?: string;
}

export interface ProvisionInput {
  provisioningJobId: string;
  operationId?: string;
  queueJobId?: string;
}

export interface RollbackResult {
  cleanedHetzner: boolean;
  cleanedTailscale: boolean;
  alreadyRolledBack: boolean;
}

const silentReporter: StepReporter = { step: async () => undefined };

const LIVE: readonly InstanceStatus[] = LIVE_INSTANCE_STATUSES;
const DESTROYABLE: InstanceStatus[] = LIVE.filter((s) => s !== 'destroying');
const NOT_DESTROYED_AGENT: AgentStatus[] = ['draft', 'provisioning', 'active', 'paused', 'error'];

/**
 * Carries out provision, stop, start, destroy and rollback against the clouds and records every
 * status change as a guarded transition (src/db/transitions). Each method may run again after a
 * crash at any point — queues deliver at least once — and continues from where the last run got to.
 */
export class LifecycleService {
  private readonly ds: DataSource;
  private readonly hetzner: HetznerClient;
  private readonly tailscale: TailscaleClient;
  private readonly logger: Logger;
  private readonly settings: LifecycleSettings;
  private readonly instances: InstanceRepository;

  constructor(deps: LifecycleDeps) {
    this.ds = deps.dataSource;
    this.instances = new InstanceRepository({ dataSource: deps.dataSource });
    this.hetzner = deps.hetzner;
    this.tailscale = deps.tailscale;
    this.logger = deps.logger;
    this.settings = deps.settings;
  }

  // ---------------------------------------------------------------------------------------------
  // provision

  async provision(input: ProvisionInput, r: StepReporter = silentReporter): Promise<void> {
    const { provisioningJobId } = input;
    const operationId = input.operationId ?? null;
    const job = await this.findJob(provisioningJobId);
    const log = this.logger.child({
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

    let step = 'prepare';
    try {
      await r.step(step, 5, 'marking the instance as provisioning');
      const { agent, instance, hostname } = await this.beginProvision(job, operationId, log);

      step = 'find-server';
      await r.step(step, 10, 'looking for a server made by an earlier attempt');
      let server = await this.findProvisionedServer(instance, job, log);
      let actionIds: number[] = [];
      if (server) {
        await r.step(step, 30, `resuming with server ${server.id}`);
      } else {
        step = 'create-server';
        await r.step(step, 20, 'creating an auth key and the server');
        ({ server, actionIds } = await this.createServer(agent, instance, job, hostname, log));
        await r.step(step, 30, `server ${server.id} created`);
      }
      const serverId = server.id;

      step = 'wait-server';
      await r.step(step, 40, `waiting for server ${serverId} to run`);
      server = await this.waitForServerRunning(serverId, actionIds, log);
      await this.recordServer(instance.id, server);

      step = 'wait-enrollment';
      await r.step(step, 60, `waiting for ${hostname} to join the tailnet`);
      const current = await this.mustGetInstance(instance.id);
      if (current.tailscaleDeviceId) {
        log.info({ deviceId: current.tailscaleDeviceId }, '[Lifecycle] Tailnet device already recorded, skipping enrollment');
      } else {
        const device = await this.tailscale.waitForEnrollment(hostname, { timeoutMs: this.settings.enrollmentTimeoutMs });
        await this.recordDevice(instance.id, device);
        log.info({ deviceId: device.id }, `[Tailscale] Device ${device.id} enrolled as ${hostname}`);
      }

      step = 'finish';
      await r.step(step, 90, 'marking the instance as running');
      await this.moveTogether([
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
      ]);
      await this.revokeJobAuthKeys(job.id, log, { keepSole: true });
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
    return this.ds.transaction(async (m) => {
      // Locked, so the status checked here is the one the moves below start from.
      const instance = await m.findOne(Instance, { where: { id: job.instanceId }, lock: { mode: 'pessimistic_write' } });
      if (!instance) throw new NotFoundError(`Instance ${job.instanceId} not found`);
      const agent = await m.findOneBy(Agent, { id: job.agentId });
      if (!agent) throw new NotFoundError(`Agent ${job.agentId} not found`);
      const reason = 'provision started';

      if (instance.status === 'provisioning') {
        log.info('[Lifecycle] Instance already provisioning, resuming');
      } else if (instance.status === 'pending') {
        await this.move(m, { entity: 'instance', id: instance.id, from: ['pending'], to: 'provisioning', reason, operationId });
      } else {
        throw new StateConflictError(`Instance ${instance.id} is ${instance.status}; it cannot be provisioned`);
      }

      if (agent.status === 'draft' || agent.status === 'error') {
        await this.move(m, { entity: 'agent', id: agent.id, from: [agent.status], to: 'provisioning', reason, operationId });
      } else if (agent.status !== 'provisioning') {
        throw new StateConflictError(`Agent ${agent.id} is ${agent.status}; it cannot be provisioned`);
      }

      if (job.status === 'running') {
        await m.increment(ProvisioningJob, { id: job.id, status: 'running' }, 'attempts', 1);
      } else {
        await this.move(m, {
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
      const hostname = instance.tailscaleHostname ?? agentHostname(agent.name, agent.id);
      if (instance.tailscaleHostname !== hostname || instance.serverName === null) {
        await m.update(Instance, { id: instance.id }, { tailscaleHostname: hostname, serverName: instance.serverName ?? hostname });
      }
      return { agent, instance: await m.findOneByOrFail(Instance, { id: instance.id }), hostname };
    });
  }

  /**
   * A server made by an earlier attempt of this job: the recorded id first, else the job label. The
   * label lookup keeps a retried job from making a second server when the create call succeeded but
   * its answer, or the database write after it, was lost.
   */
  private async findProvisionedServer(instance: Instance, job: ProvisioningJob, log: Logger): Promise<HetznerServer | null> {
    if (instance.serverId) {
      const server = await this.hetzner.getServer(Number(instance.serverId));
      if (server) {
        log.info({ serverId: server.id }, `[Lifecycle] Server ${server.id} already created, resuming`);
        return server;
      }
      throw new StateConflictError(
        `Server ${instance.serverId} recorded for instance ${instance.id} no longer exists; roll the provision back`,
      );
    }
    const found = await this.hetzner.listServers(jobServerSelector({ agentId: job.agentId, provisioningJobId: job.id }));
    if (found.length === 0) return null;
    const [server, ...extra] = found.sort((a, b) => a.id - b.id);
    for (const other of extra) {
      // Only two attempts of one job creating at the same moment get here; the extras carry our job label and are unused.
      log.warn({ serverId: other.id }, `[Lifecycle] Deleting duplicate server ${other.id} of job ${job.id}`);
      await this.hetzner.deleteServer(other.id);
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
    log: Logger,
  ): Promise<{ server: HetznerServer; actionIds: number[] }> {
    // Tailscale caps key descriptions at 50 characters.
    const authKey = await this.tailscale.createAuthKey({ description: `tailfleet ${hostname}`.slice(0, 50) });
    await this.ds.query(`UPDATE provisioning_jobs SET auth_key_ids = array_append(auth_key_ids, $2) WHERE id = $1`, [
      job.id,
      authKey.id,
    ]);

    let created;
    try {
      created = await this.hetzner.createServer({
        name: instance.serverName ?? hostname,
        serverType: instance.serverType || this.settings.serverType,
        image: instance.image || this.settings.image,
        location: instance.location ?? this.settings.location,
        sshKeys: this.settings.sshKeys.length > 0 ? this.settings.sshKeys : undefined,
        userData: buildUserData({ authKey: authKey.key, hostname }),
        labels: serverLabels({ agentId: agent.id, provisioningJobId: job.id, instanceId: instance.id }),
      });
    } catch (err) {
      if (serverSurelyNotCreated(err)) {
        // No server will ever use this key: delete it rather than leave a live credential until it expires.
        await this.tailscale.deleteAuthKey(authKey.id).catch((cleanupErr: unknown) => {
          log.warn({ err: cleanupErr, authKeyId: authKey.id }, `[Tailscale] Could not delete unused auth key ${authKey.id}`);
        });
      }
      if (err instanceof CloudApiError && err.code === 'uniqueness_error') {
        // The name is the hostname, so a parallel attempt of this job most likely created it first: continue with that one.
        const theirs = await this.findProvisionedServer(await this.mustGetInstance(instance.id), job, log);
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
        await this.discardServer(instance.id, server.id, actionIds, authKey.id, hostname, log);
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
    instanceId: string,
    serverId: number,
    actionIds: number[],
    authKeyId: string,
    hostname: string,
    log: Logger,
  ): Promise<void> {
    log.warn({ serverId }, `[Lifecycle] Instance changed during create; deleting server ${serverId}`);
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (cleanupErr) {
        log.error({ err: cleanupErr, serverId }, `[Lifecycle] Could not ${what} of discarded server ${serverId}`);
      }
    };
    await attempt('delete the auth key', () => this.tailscale.deleteAuthKey(authKeyId));
    await attempt('wait for the create actions', () =>
      this.hetzner.waitForActions(actionIds, { timeoutMs: this.settings.actionTimeoutMs }),
    );
    await attempt('delete', () => this.hetzner.deleteServer(serverId));
    const current = await this.mustGetInstance(instanceId);
    if (current.status !== 'provisioning') {
      await attempt('delete the device', async () => {
        for (const d of (await this.tailscale.listDevices()).filter((x) => hostnameMatches(x, hostname))) {
          await this.tailscale.deleteDevice(d.id);
        }
      });
    }
  }

  private async waitForServerRunning(serverId: number, actionIds: number[], log: Logger): Promise<HetznerServer> {
    const timeoutMs = this.settings.actionTimeoutMs;
    if (actionIds.length > 0) await this.hetzner.waitForActions(actionIds, { timeoutMs });
    let server = await this.hetzner.getServer(serverId);
    if (server?.status === 'off') {
      log.info({ serverId }, `[Lifecycle] Server ${serverId} is off, powering it on`);
      await this.hetzner.powerOnServer(serverId);
      server = await this.hetzner.getServer(serverId);
    }
    if (server && server.status !== 'running') {
      server = await this.hetzner.waitForServerStatus(serverId, 'running', { timeoutMs });
    }
    if (!server) throw new StateConflictError(`Server ${serverId} disappeared while provisioning; roll the provision back`);
    return server;
  }

  /**
   * Its own statement, run right after the create call, so a crash at any later point leaves the id
   * where rollback and destroy look. The repository guards it: only while pending/provisioning, never
   * over a different id (the same id again is a no-op success for resumed runs).
   */
  private async recordServer(instanceId: string, server: HetznerServer): Promise<void> {
    await this.guarded(() =>
      this.instances.setServer(instanceId, {
        serverId: String(server.id),
        serverName: server.name,
        serverIp: server.public_net.ipv4?.ip ?? null,
      }),
    );
  }

  private async recordDevice(instanceId: string, device: TailscaleDevice): Promise<void> {
    await this.guarded(() =>
      this.instances.setDevice(instanceId, { tailscaleDeviceId: device.id, tailscaleIp: tailnetIpv4(device) }),
    );
  }

  /** The reason stays on job and instance for the API and the rollback; statuses are left to retries and rollback. */
  private async recordProvisionFailure(job: ProvisioningJob, step: string, err: unknown, log: Logger): Promise<void> {
    const message = errorMessage(err);
    log.error({ err, step }, `[Lifecycle] Provision failed at ${step}: ${message}`);
    try {
      await this.ds.transaction(async (m) => {
        await m.update(ProvisioningJob, { id: job.id, status: 'running' }, { error: message, failedStep: step });
        await m.update(Instance, { id: job.instanceId, status: 'provisioning' }, { error: message });
      });
    } catch (dbErr) {
      log.error({ err: dbErr }, '[Lifecycle] Could not record the provision failure');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // stop

  async stop(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const operationId = ctx.operationId ?? null;
    const log = this.logger.child({ agentId, operationId, operation: 'stop' });
    const found = await this.findLiveInstanceOfAgent(agentId);

    if (found?.status === 'stopped' && (await this.reachedBy(found.id, 'stopped', operationId))) {
      log.info(`[Lifecycle] Agent ${agentId} already stopped by this operation`);
      await r.step('done', 100, 'already stopped');
      return;
    }
    let instance: Instance;
    if (found?.status === 'running') {
      await r.step('prepare', 10, 'marking the instance as stopping');
      ({ row: instance } = await this.guarded(() =>
        transition(this.ds, { entity: 'instance', id: found.id, from: ['running'], to: 'stopping', reason: 'stop requested', operationId }),
      ));
    } else if (found?.status === 'stopping') {
      log.info('[Lifecycle] Instance already stopping, resuming the shutdown');
      instance = found;
    } else {
      throw new StateConflictError('No running instance to stop');
    }

    let result: string;
    try {
      const serverId = requireServerId(instance);
      await r.step('shutdown', 30, `shutting down server ${serverId}`);
      result = await this.hetzner.shutdownServer(serverId, { timeoutMs: this.settings.shutdownTimeoutMs });
    } catch (err) {
      await this.revert(instance.id, 'stopping', 'running', err, { operationId, reason: 'stop failed' }, log);
      throw err;
    }

    await r.step('finish', 90, 'marking the instance as stopped');
    await this.moveTogether([
      {
        entity: 'instance',
        id: instance.id,
        from: ['stopping'],
        to: 'stopped',
        reason: result === 'already_off' ? 'server already off' : `server shut down (${result})`,
        operationId,
        patch: { stoppedAt: new Date(), error: null },
      },
      { entity: 'agent', id: agentId, from: ['active'], to: 'paused', reason: 'instance stopped', operationId, allowSame: true },
    ]);
    await r.step('done', 100, 'stopped');
    log.info(`[Lifecycle] Agent ${agentId} stopped successfully`);
  }

  // ---------------------------------------------------------------------------------------------
  // start

  async start(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const operationId = ctx.operationId ?? null;
    const log = this.logger.child({ agentId, operationId, operation: 'start' });
    const found = await this.findLiveInstanceOfAgent(agentId);

    if (found?.status === 'running' && (await this.reachedBy(found.id, 'running', operationId))) {
      log.info(`[Lifecycle] Agent ${agentId} already started by this operation`);
      await r.step('done', 100, 'already running');
      return;
    }
    let instance: Instance;
    if (found?.status === 'stopped') {
      await r.step('prepare', 10, 'marking the instance as starting');
      ({ row: instance } = await this.guarded(() =>
        transition(this.ds, { entity: 'instance', id: found.id, from: ['stopped'], to: 'starting', reason: 'start requested', operationId }),
      ));
    } else if (found?.status === 'starting') {
      log.info('[Lifecycle] Instance already starting, resuming the power-on');
      instance = found;
    } else {
      throw new StateConflictError('No stopped instance to start');
    }

    let result: string;
    try {
      const serverId = requireServerId(instance);
      await r.step('poweron', 30, `powering on server ${serverId}`);
      result = await this.hetzner.powerOnServer(serverId);
    } catch (err) {
      await this.revert(instance.id, 'starting', 'stopped', err, { operationId, reason: 'start failed' }, log);
      throw err;
    }

    await r.step('finish', 90, 'marking the instance as running');
    await this.moveTogether([
      {
        entity: 'instance',
        id: instance.id,
        from: ['starting'],
        to: 'running',
        reason: result === 'already_running' ? 'server already running' : 'server powered on',
        operationId,
        patch: { startedAt: new Date(), stoppedAt: null, error: null },
      },
      { entity: 'agent', id: agentId, from: ['paused'], to: 'active', reason: 'instance started', operationId, allowSame: true },
    ]);
    await r.step('done', 100, 'running');
    log.info(`[Lifecycle] Agent ${agentId} started successfully`);
  }

  // ---------------------------------------------------------------------------------------------
  // destroy

  async destroy(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const operationId = ctx.operationId ?? null;
    const log = this.logger.child({ agentId, operationId, operation: 'destroy' });
    const agent = await this.mustGetAgent(agentId);
    const found = await this.findLiveInstance(agentId);

    if (!found) {
      if (agent.status === 'destroyed') {
        log.info(`[Lifecycle] Agent ${agentId} already destroyed`);
        await r.step('done', 100, 'already destroyed');
        return;
      }
      // Without a live instance nothing should exist; the labelled sweep catches a server a crashed provision left.
      log.info(`[Lifecycle] Agent ${agentId} has no live instance, nothing to clean up but leftovers`);
      await r.step('delete-server', 30, 'looking for leftover servers');
      await this.deleteServers(agentServerSelector(agentId), [], log);
      await this.move(this.ds, { entity: 'agent', id: agentId, from: NOT_DESTROYED_AGENT, to: 'destroyed', reason: 'destroyed', operationId, allowSame: true });
      await r.step('done', 100, 'destroyed');
      log.info(`[Lifecycle] Agent ${agentId} destroyed successfully`);
      return;
    }

    if (found.status === 'destroying') {
      log.info('[Lifecycle] Instance already destroying, resuming');
    } else {
      await r.step('prepare', 5, 'marking the instance as destroying');
      await this.move(this.ds, {
        entity: 'instance',
        id: found.id,
        from: DESTROYABLE,
        to: 'destroying',
        reason: `destroy requested (was ${found.status})`,
        operationId,
        // A parallel destroy of the same agent got there first; both finish the same work.
        allowSame: true,
      });
    }
    // Read after the transition: any server a provision managed to record is visible now, and any it
    // creates from here on is refused by its guarded write and deleted by that provision.
    const instance = await this.mustGetInstance(found.id);
    const hostname = instance.tailscaleHostname ?? agentHostname(agent.name, agent.id);

    try {
      await r.step('delete-server', 20, 'deleting the server');
      await this.deleteServers(agentServerSelector(agentId), recordedServerIds(instance), log);
      await r.step('delete-device', 60, 'removing the tailnet device');
      await this.deleteDevices(instance, hostname, log);
      await r.step('confirm', 80, 'confirming server and device are gone');
      await this.confirmGone(agentServerSelector(agentId), instance, hostname);
    } catch (err) {
      const message = errorMessage(err);
      log.error({ err }, `[Lifecycle] Destroy of agent ${agentId} failed: ${message}`);
      await this.ds
        .getRepository(Instance)
        .update({ id: instance.id, status: 'destroying' }, { error: message })
        .catch((dbErr: unknown) => log.error({ err: dbErr }, '[Lifecycle] Could not record the destroy failure'));
      throw err;
    }

    await r.step('finish', 90, 'marking the instance as destroyed');
    await this.ds.transaction(async (m) => {
      const moved = await this.move(m, {
        entity: 'instance',
        id: instance.id,
        from: ['destroying'],
        to: 'destroyed',
        reason: 'server and device deleted',
        operationId,
        patch: { destroyedAt: new Date(), error: null },
        allowSame: true,
      });
      if (!moved) return; // a parallel destroy finished first and recorded everything
      await this.move(m, { entity: 'agent', id: agentId, from: NOT_DESTROYED_AGENT, to: 'destroyed', reason: 'destroyed', operationId, allowSame: true });
      // A provision still open for this instance can never finish now; mark it so the rollback sweep closes it.
      const open = await m.findBy(ProvisioningJob, { instanceId: instance.id });
      for (const job of open.filter((j) => j.status === 'queued' || j.status === 'running')) {
        await this.move(m, {
          entity: 'provisioning_job',
          id: job.id,
          from: [job.status],
          to: 'failed',
          reason: 'instance destroyed',
          operationId,
          patch: { error: 'Instance destroyed before provisioning finished', finishedAt: new Date() },
        });
      }
    });
    await r.step('done', 100, 'destroyed');
    log.info(`[Lifecycle] Agent ${agentId} destroyed successfully`);
  }

  /** Deletes the recorded servers and every server matching the selector; true if any was deleted. */
  private async deleteServers(selector: string, recorded: number[], log: Logger): Promise<boolean> {
    const labelled = await this.hetzner.listServers(selector);
    const ids = [...new Set([...recorded, ...labelled.map((s) => s.id)])];
    let deleted = false;
    for (const id of ids) {
      if (await this.hetzner.deleteServer(id)) {
        deleted = true;
        log.info({ serverId: id }, `[Lifecycle] Server ${id} deleted`);
      }
    }
    return deleted;
  }

  /**
   * Deletes the instance's tailnet device: by the recorded id, else by tailnet IP, else by hostname
   * (one listing answers all three). Returns true if a device was deleted.
   */
  private async deleteDevices(instance: Instance, hostname: string | null, log: Logger): Promise<boolean> {
    const devices = await this.instanceDevices(instance, hostname);
    let deleted = false;
    for (const device of devices) {
      if (await this.tailscale.deleteDevice(device.id)) {
        deleted = true;
        log.info({ deviceId: device.id }, `[Lifecycle] Device ${device.id} removed from the tailnet`);
      }
    }
    if (instance.tailscaleDeviceId && !devices.some((d) => d.id === instance.tailscaleDeviceId)) {
      // Not listed, so most likely gone; deleting by id costs one request and is a 404 no-op then.
      if (await this.tailscale.deleteDevice(instance.tailscaleDeviceId)) deleted = true;
    }
    return deleted;
  }

  private async instanceDevices(instance: Instance, hostname: string | null): Promise<TailscaleDevice[]> {
    const devices = await this.tailscale.listDevices();
    const { tailscaleDeviceId: deviceId, tailscaleIp: ip } = instance;
    const byId = deviceId ? devices.filter((d) => d.id === deviceId) : [];
    if (byId.length > 0) return byId;
    const byIp = ip ? devices.filter((d) => d.addresses?.includes(ip)) : [];
    if (byIp.length > 0) return byIp;
    return hostname ? devices.filter((d) => hostnameMatches(d, hostname)) : [];
  }

  private async confirmGone(selector: string, instance: Instance, hostname: string): Promise<void> {
    const left = (await this.hetzner.listServers(selector)).map((s) => `server ${s.id}`);
    for (const id of recordedServerIds(instance)) {
      if (!left.includes(`server ${id}`) && (await this.hetzner.getServer(id))) left.push(`server ${id}`);
    }
    const servers = left.length;
    for (const d of await this.instanceDevices(instance, hostname)) left.push(`device ${d.id}`);
    if (left.length > 0) {
      throw new CloudApiError({
        api: servers > 0 ? 'hetzner' : 'tailscale',
        status: 0,
        code: 'still_present',
        message: `Still present after deletion: ${left.join(', ')}`,
        retryable: true,
        method: 'GET',
        path: servers > 0 ? '/servers' : '/devices',
      });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // rollback

  async rollbackFailedProvision(
    provisioningJobId: string,
    ctx: OperationContext = {},
    r: StepReporter = silentReporter,
  ): Promise<RollbackResult> {
    const operationId = ctx.operationId ?? null;
    const job = await this.findJob(provisioningJobId);
    const agentId = job.agentId;
    const log = this.logger.child({ agentId, operationId, provisioningJobId, operation: 'rollback' });

    if (job.status === 'rolled_back') {
      log.info(`[Lifecycle] Job ${provisioningJobId} already rolled back`);
      await r.step('done', 100, 'already rolled back');
      return { cleanedHetzner: false, cleanedTailscale: false, alreadyRolledBack: true };
    }
    if (job.status === 'succeeded') {
      throw new StateConflictError(`Job ${provisioningJobId} succeeded; destroy the agent instead of rolling back`);
    }

    await r.step('prepare', 5, 'marking the instance as failed');
    // The instance leaves `provisioning` before anything is deleted: an attempt still running can then
    // not record a new server (its guarded write fails and it deletes what it made).
    const { instance, agent, owned } = await this.ds.transaction(async (m) => {
      const inst = await m.findOne(Instance, { where: { id: job.instanceId }, lock: { mode: 'pessimistic_write' } });
      if (!inst) throw new NotFoundError(`Instance ${job.instanceId} not found`);
      const ag = await m.findOneByOrFail(Agent, { id: agentId });
      if (inst.status === 'pending' || inst.status === 'provisioning') {
        await this.move(m, {
          entity: 'instance',
          id: inst.id,
          from: [inst.status],
          to: 'failed',
          reason: 'provision failed, rolling back',
          operationId,
          patch: { error: 'Rolling back after provision failure' },
        });
        if (ag.status === 'draft' || ag.status === 'provisioning') {
          await this.move(m, { entity: 'agent', id: agentId, from: [ag.status], to: 'error', reason: 'provision rolled back', operationId });
        }
        return { instance: inst, agent: ag, owned: true };
      }
      // failed: an earlier rollback run stopped after this point. destroyed: destroy already cleaned up.
      if (inst.status === 'failed') return { instance: inst, agent: ag, owned: true };
      if (inst.status === 'destroyed') return { instance: inst, agent: ag, owned: false };
      throw new StateConflictError(`Instance ${inst.id} is ${inst.status}; destroy the agent instead of rolling back`);
    });

    // Every instance of an agent gets the same hostname: match devices by it only while no newer
    // instance is live, or this rollback could delete that instance's device.
    const newer = await this.findLiveInstance(agentId);
    const hostname = newer ? null : (instance.tailscaleHostname ?? agentHostname(agent.name, agent.id));

    await r.step('delete-server', 20, 'deleting the servers of this job');
    const cleanedHetzner = await this.deleteServers(
      jobServerSelector({ agentId, provisioningJobId }),
      recordedServerIds(instance),
      log,
    );
    await r.step('delete-device', 60, 'removing the tailnet device');
    const cleanedTailscale = await this.deleteDevices(instance, hostname, log);
    await this.revokeJobAuthKeys(job.id, log);
    if (!cleanedHetzner && !cleanedTailscale) log.info(`[Lifecycle] No VM to clean up for job ${provisioningJobId}`);

    await r.step('finish', 90, 'marking the job as rolled back');
    const summary = `Rolled back after provision failure. Cleaned: Hetzner=${cleanedHetzner}, Tailscale=${cleanedTailscale}`;
    await this.ds.transaction(async (m) => {
      if (owned) await m.update(Instance, { id: instance.id, status: 'failed' }, { error: summary });
      await this.move(m, {
        entity: 'provisioning_job',
        id: job.id,
        from: job.status === 'queued' ? ['queued'] : ['running', 'failed'],
        to: 'rolled_back',
        reason: summary,
        operationId,
        patch: { finishedAt: new Date() },
      });
    });
    await r.step('done', 100, summary);
    log.info({ cleanedHetzner, cleanedTailscale }, `[Lifecycle] Cleanup complete for job ${provisioningJobId}`);
    return { cleanedHetzner, cleanedTailscale, alreadyRolledBack: false };
  }

  // ---------------------------------------------------------------------------------------------
  // shared helpers

  /**
   * Revokes the auth keys recorded for a job that has ended (a used or deleted key is fine) and
   * forgets them. `keepSole`: after a provision with a single attempt's key, that key is the one
   * the device joined with and is already spent: no request needed.
   */
  private async revokeJobAuthKeys(provisioningJobId: string, log: Logger, o: { keepSole?: boolean } = {}): Promise<void> {
    const [row] = (await this.ds.query(`SELECT auth_key_ids FROM provisioning_jobs WHERE id = $1`, [provisioningJobId])) as Array<{
      auth_key_ids: string[];
    }>;
    const ids = row?.auth_key_ids ?? [];
    if (ids.length === 0 || (o.keepSole && ids.length === 1)) return;
    for (const id of ids) {
      if (await this.tailscale.deleteAuthKey(id)) {
        log.info({ authKeyId: id }, `[Tailscale] Revoked auth key ${id} of job ${provisioningJobId}`);
      }
    }
    await this.ds.query(
      `UPDATE provisioning_jobs SET auth_key_ids = ARRAY(SELECT k FROM unnest(auth_key_ids) AS k WHERE k <> ALL($2::varchar[])) WHERE id = $1`,
      [provisioningJobId, ids],
    );
  }

  /**
   * The persistence layer's guarded transition, with its conflicts turned into this service's
   * permanent StateConflictError. Returns false when allowSame found the row already there.
   */
  private async move<K extends EventEntityType>(db: Db, req: TransitionRequest<K>): Promise<boolean> {
    return (await this.guarded(() => transition(db, req))).changed;
  }

  /** Moves that belong together (instance and agent, …) as one statement: all of them or none. */
  private async moveTogether(requests: readonly TransitionRequest[]): Promise<void> {
    await this.guarded(() => transitionTogether(this.ds, requests));
  }

  private async guarded<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (err instanceof DbStateConflictError) throw new StateConflictError(err.message, { cause: err, lostRace: true });
      if (err instanceof RecordNotFoundError) throw new NotFoundError(err.message, { cause: err });
      throw err;
    }
  }

  /**
   * Puts an instance back where the operation found it, keeping the error, so the job can retry from
   * a stable state. If another operation moved the instance meanwhile, this run lost the race and
   * says so instead of reporting the cloud error.
   */
  private async revert(
    instanceId: string,
    from: InstanceStatus,
    to: InstanceStatus,
    err: unknown,
    ctx: { operationId: string | null; reason: string },
    log: Logger,
  ): Promise<void> {
    const message = errorMessage(err);
    log.error({ err }, `[Lifecycle] ${ctx.reason}: ${message}`);
    try {
      await this.move(this.ds, {
        entity: 'instance',
        id: instanceId,
        from: [from],
        to,
        reason: `${ctx.reason}: ${message}`,
        operationId: ctx.operationId,
        patch: { error: message },
      });
    } catch (moveErr) {
      if (!(moveErr instanceof StateConflictError)) throw moveErr;
      const current = await this.mustGetInstance(instanceId);
      throw new StateConflictError(`Instance ${instanceId} is now ${current.status}; another operation took over (${message})`, {
        cause: err,
        lostRace: true,
      });
    }
  }

  /** True when the instance's latest move into `status` was made by this operation (a redelivered, finished job). */
  private async reachedBy(instanceId: string, status: InstanceStatus, operationId: string | null): Promise<boolean> {
    if (!operationId) return false;
    const last = await this.ds.getRepository(Event).findOne({
      where: { entityType: 'instance', entityId: instanceId, toStatus: status },
      order: { id: 'DESC' },
    });
    return last?.operationId === operationId;
  }

  private async findJob(id: string): Promise<ProvisioningJob> {
    const job = isUuid(id) ? await this.ds.getRepository(ProvisioningJob).findOneBy({ id }) : null;
    if (!job) throw new NotFoundError(`Job ${id} not found`);
    return job;
  }

  private async mustGetAgent(id: string): Promise<Agent> {
    const agent = isUuid(id) ? await this.ds.getRepository(Agent).findOneBy({ id }) : null;
    if (!agent) throw new NotFoundError(`Agent ${id} not found`);
    return agent;
  }

  private async mustGetInstance(id: string, m: EntityManager = this.ds.manager): Promise<Instance> {
    const instance = await m.findOneBy(Instance, { id });
    if (!instance) throw new NotFoundError(`Instance ${id} not found`);
    return instance;
  }

  private findLiveInstance(agentId: string): Promise<Instance | null> {
    return this.instances.findLiveByAgent(agentId);
  }

  /**
   * The agent's live instance; NotFoundError for an unknown agent. An instance implies its agent
   * (foreign key), so the agent is read only when there is none, to tell the two answers apart.
   */
  private async findLiveInstanceOfAgent(agentId: string): Promise<Instance | null> {
    const found = await this.findLiveInstance(agentId);
    if (!found) await this.mustGetAgent(agentId);
    return found;
  }
}

function requireServerId(instance: Instance): number {
  if (!instance.serverId) throw new StateConflictError(`Instance ${instance.id} has no server id`);
  return Number(instance.serverId);
}

function recordedServerIds(instance: Instance): number[] {
  return instance.serverId ? [Number(instance.serverId)] : [];
}

/** A 4xx (429 included) means Hetzner refused the create; 5xx and network errors leave open whether the server exists. */
function serverSurelyNotCreated(err: unknown): boolean {
  return err instanceof CloudApiError && err.status >= 400 && err.status < 500;
}

/** Same rule as the client's enrollment lookup: the machine name, or the first label of the MagicDNS name. */
function hostnameMatches(device: TailscaleDevice, hostname: string): boolean {
  const wanted = hostname.toLowerCase();
  return device.hostname?.toLowerCase() === wanted || device.name?.split('.')[0]?.toLowerCase() === wanted;
}

function tailnetIpv4(device: TailscaleDevice): string | null {
  return device.addresses.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)) ?? device.addresses[0] ?? null;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
