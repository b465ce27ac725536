import type { TailscaleDevice } from '../clients/tailscale/tailscale.types';
import type { GuardContext, OwnershipGuard } from '../fleet/ownership-guard';
import type { Logger } from '../lib/logger';
import type { WorkflowDeps } from './workflow-deps';

/**
 * Waits for the server to join the tailnet as `hostname` with the fleet's tags, and returns that
 * device. A device under the hostname without the tags is never taken for the agent's (our keys
 * make tagged devices only; anyone may name a machine anything): each one seen is recorded as an
 * ownership finding, whether the wait then succeeds or times out.
 */
export async function waitForAgentDevice(
  deps: Pick<WorkflowDeps, 'tailscale' | 'settings'> & { guard: OwnershipGuard },
  hostname: string,
  ctx: GuardContext,
  log: Logger,
): Promise<TailscaleDevice> {
  const { tailscale } = deps;
  const untagged = new Map<string, TailscaleDevice>();
  try {
    return await tailscale.waitForEnrollment(hostname, {
      timeoutMs: deps.settings.enrollmentTimeoutMs,
      onUntagged: (device) => untagged.set(device.id, device),
    });
  } finally {
    for (const device of untagged.values()) {
      await deps.guard.checkEnrolledDevice(device, { hostname, tags: tailscale.tags }, ctx).catch((err: unknown) => {
        log.error({ err, deviceId: device.id }, `[Ownership] Could not record the finding on device ${device.id}`);
      });
    }
  }
}
