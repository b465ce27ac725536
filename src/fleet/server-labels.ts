/**
 * Labels tailfleet puts on every server it creates. They are how a retried provision finds the
 * server an earlier attempt made, and how rollback and destroy find servers whose id never reached
 * the database.
 */
export const MANAGED_LABEL = { key: 'managed-by', value: 'tailfleet' } as const;
export const AGENT_LABEL = 'tailfleet-agent';
export const JOB_LABEL = 'tailfleet-job';
export const INSTANCE_LABEL = 'tailfleet-instance';

export function serverLabels(o: { agentId: string; provisioningJobId: string; instanceId: string }): Record<string, string> {
  return {
    [MANAGED_LABEL.key]: MANAGED_LABEL.value,
    [AGENT_LABEL]: o.agentId,
    [JOB_LABEL]: o.provisioningJobId,
    [INSTANCE_LABEL]: o.instanceId,
  };
}

export function jobServerSelector(o: { agentId: string; provisioningJobId: string }): string {
  return `${MANAGED_LABEL.key}=${MANAGED_LABEL.value},${AGENT_LABEL}=${o.agentId},${JOB_LABEL}=${o.provisioningJobId}`;
}

export function agentServerSelector(agentId: string): string {
  return `${MANAGED_LABEL.key}=${MANAGED_LABEL.value},${AGENT_LABEL}=${agentId}`;
}
