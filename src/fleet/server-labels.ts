import type { Fleet } from './fleet';

/**
 * Labels tailfleet puts on every server it creates. They are how a retried provision finds the
 * server an earlier attempt made, and how rollback and destroy find servers whose id never reached
 * the database.
 */
export const MANAGED_LABEL = { key: 'managed-by', value: 'tailfleet' } as const;
export const AGENT_LABEL = 'tailfleet-agent';
export const JOB_LABEL = 'tailfleet-job';
export const INSTANCE_LABEL = 'tailfleet-instance';
/** The fleet (FLEET_NAME) that made the server; see src/fleet/fleet.ts for servers without it. */
export const FLEET_LABEL = 'tailfleet-fleet';

/** Every label of a new server: managed-by, the fleet, and the agent, job and instance it was made for. */
export function serverLabels(fleet: Fleet, o: { agentId: string; provisioningJobId: string; instanceId: string }): Record<string, string> {
  return {
    [MANAGED_LABEL.key]: MANAGED_LABEL.value,
    ...fleet.labels(),
    [AGENT_LABEL]: o.agentId,
    [JOB_LABEL]: o.provisioningJobId,
    [INSTANCE_LABEL]: o.instanceId,
  };
}

/** Selector terms for the servers of one provisioning job (Fleet.selector adds managed-by and the fleet). */
export function jobServerTerms(o: { agentId: string; provisioningJobId: string }): string[] {
  return [`${AGENT_LABEL}=${o.agentId}`, `${JOB_LABEL}=${o.provisioningJobId}`];
}

/** Selector terms for every server of one agent. */
export function agentServerTerms(agentId: string): string[] {
  return [`${AGENT_LABEL}=${agentId}`];
}

/** Keys an application may not put on its agents: tailfleet's own, and anything under its prefix. */
export function isReservedLabelKey(key: string): boolean {
  return key === MANAGED_LABEL.key || key.startsWith('tailfleet-') || key.startsWith('hetzner.cloud/');
}

/**
 * How a server made by a wake joins the tailnet: `snapshot` comes back as the node on its restored
 * disk (no auth key); `auth-key` joins afresh because that node did not come back.
 */
export const JOIN_LABEL = 'tailfleet-join';
export type JoinMode = 'snapshot' | 'auth-key';

/** Labels of a hibernation snapshot: managed-by, the fleet, and the agent and instance it holds. */
export function snapshotLabels(fleet: Fleet, o: { agentId: string; instanceId: string }): Record<string, string> {
  return { [MANAGED_LABEL.key]: MANAGED_LABEL.value, ...fleet.labels(), [AGENT_LABEL]: o.agentId, [INSTANCE_LABEL]: o.instanceId };
}

/** Selector terms for the servers or snapshots of one instance. */
export function instanceTerms(o: { agentId: string; instanceId: string }): string[] {
  return [`${AGENT_LABEL}=${o.agentId}`, `${INSTANCE_LABEL}=${o.instanceId}`];
}
