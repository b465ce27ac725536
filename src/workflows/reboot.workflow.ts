import { WaitTimeoutError } from '../clients/errors';
import { transition } from '../db/transitions';
import type { Instance } from '../entities';
import { StateConflictError } from '../errors';
import type { OwnershipGuard } from '../fleet/ownership-guard';
import { reboot } from '../operations/types/reboot';
import { guarded } from './guarded-moves';
import { findLiveInstanceOfAgent, finishTogether, reachedBy } from './records';
import { silentReporter, type StepReporter } from './step-reporter';
import type { OperationContext, WorkflowDeps } from './workflow-deps';

/**
 * Reboots an agent's machine in place (running → rebooting → running), by the rule a stop follows:
 * graceful first, forced when the machine does not react within the shutdown timeout. "Came back"
 * is the tailnet device seen offline after the request and online again: the server's status stays
 * `running` through a reboot, so the device is the only witness that the OS restarted. The reset
 * cuts power, so it goes through the ownership guard like a power-off. Safe to run again: a
 * redelivery resumes from `rebooting` and reboots once more, which ends in the same place.
 */
export class RebootWorkflow {
  private readonly guard: OwnershipGuard;

  constructor(private readonly deps: WorkflowDeps) {
    this.guard = deps.guard;
  }

  async reboot(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    const operationId = ctx.operationId ?? null;
    const log = this.deps.logger.child({ agentId, operationId, operation: 'reboot' });
    const found = await findLiveInstanceOfAgent(this.deps.repositories, agentId);
    if (found?.status === 'running' && (await reachedBy(this.deps.repositories, found.id, 'running', operationId))) {
      await r.step('done', 100, 'already rebooted');
      return;
    }
    let instance: Instance;
    if (found?.status === 'running') {
      await r.step('prepare', 10, 'marking the instance as rebooting');
      ({ row: instance } = await guarded(() =>
        transition(this.deps.dataSource, { entity: 'instance', id: found.id, from: ['running'], to: 'rebooting', reason: 'reboot requested', operationId }),
      ));
    } else if (found?.status === 'rebooting') {
      log.info('[Lifecycle] Instance already rebooting, rebooting again');
      instance = found;
    } else {
      throw new StateConflictError(reboot.command.refusal);
    }
    if (!instance.serverId) throw new StateConflictError(`Instance ${instance.id} has no server id`);
    if (!instance.tailscaleDeviceId) throw new StateConflictError(`Instance ${instance.id} has no tailnet device to see it come back`);
    const serverId = Number(instance.serverId);
    const deviceId = instance.tailscaleDeviceId;
    const { shutdownTimeoutMs, enrollmentTimeoutMs } = this.deps.settings;

    await r.step('reboot', 30, `sending the reboot signal to server ${serverId}`);
    await this.deps.hetzner.rebootServer(serverId);
    let how = 'graceful';
    if (!(await this.cameBack(deviceId, shutdownTimeoutMs))) {
      log.warn(`[Lifecycle] Server ${serverId} did not restart within ${Math.round(shutdownTimeoutMs / 1000)}s, falling back to a reset`);
      await r.step('reset', 50, `resetting server ${serverId}`);
      await this.resetGuarded(serverId, { operation: 'reboot', operationId, agentId, instanceId: instance.id });
      how = 'forced';
      if (!(await this.cameBack(deviceId, enrollmentTimeoutMs))) {
        throw new WaitTimeoutError({
          api: 'tailscale',
          code: 'device_offline',
          path: `/device/${deviceId}`,
          message: `Tailscale device ${deviceId} did not come back online within ${enrollmentTimeoutMs} ms of the reset`,
        });
      }
    }

    await r.step('finish', 90, 'marking the instance as running');
    const moved = await finishTogether(
      this.deps,
      ctx,
      [{ entity: 'instance', id: instance.id, from: ['rebooting'], to: 'running', reason: `server rebooted (${how}); device back online`, operationId, patch: { error: null } }],
      { instanceId: instance.id, status: 'running', lastStep: 'done' },
    );
    await r.step('done', 100, moved ? 'rebooted' : 'already rebooted');
    log.info(`[Lifecycle] Agent ${agentId} rebooted (${how})`);
  }

  /** Cuts power and starts the server again, once the guard has seen the server is this agent's. */
  private async resetGuarded(serverId: number, ctx: { operation: string; operationId: string | null; agentId: string; instanceId: string }): Promise<void> {
    const server = await this.deps.hetzner.getServer(serverId);
    if (!server) throw new StateConflictError(`Server ${serverId} is gone; nothing to reset`);
    const verdict = await this.guard.checkPowerOff(server, { agentId: ctx.agentId, recordedIds: [serverId] }, ctx);
    await this.deps.hetzner.resetServer(serverId);
    await this.guard.auditPowerOff(server, verdict, 'reset', ctx);
  }

  /**
   * Whether the device dropped off the tailnet and is connected again within `timeoutMs` (true), or
   * never dropped off (false: the machine did not restart). A device that went down but is not back
   * by then is a timeout: the restart happened, the machine is not up.
   */
  private async cameBack(deviceId: string, timeoutMs: number): Promise<boolean> {
    const { tailscale } = this.deps;
    const deadline = Date.now() + timeoutMs;
    const pollMs = Math.max(20, Math.min(1000, Math.floor(timeoutMs / 20)));
    for (;;) {
      const device = await tailscale.getDevice(deviceId);
      if (!device) throw new StateConflictError(`Tailscale device ${deviceId} is gone`);
      if (device.connectedToControl === false) break;
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
    const back = await tailscale.waitForDeviceOnline(deviceId, { timeoutMs: Math.max(0, deadline - Date.now()) + this.deps.settings.enrollmentTimeoutMs });
    if (!back) throw new StateConflictError(`Tailscale device ${deviceId} is gone`);
    return true;
  }
}
