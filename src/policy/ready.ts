import type { Agent, Instance } from '../entities';

/**
 * `ready`: the agent's machine runs and has joined the tailnet, and — when a reporter was installed —
 * its own cloud-init said it finished. "Running" alone is not ready: the application's bootstrap
 * may still be installing.
 */
export function isReady(agent: Pick<Agent, 'status' | 'spec' | 'bootstrapStatus'>, instance: Pick<Instance, 'status' | 'tailscaleIp'> | null): boolean {
  const joined = agent.status === 'active' && instance?.status === 'running' && instance.tailscaleIp !== null;
  if (!joined) return false;
  return agent.spec?.reporter === true ? agent.bootstrapStatus === 'done' : true;
}

/** An agent that can no longer become ready without someone's request: waiting for it is pointless. */
export function cannotBecomeReady(agent: Pick<Agent, 'status' | 'bootstrapStatus'>): boolean {
  return agent.status === 'destroyed' || agent.status === 'error' || agent.bootstrapStatus === 'error';
}
