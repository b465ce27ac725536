import { noArgs, through, type OperationDescriptor } from './descriptor';

/** Snapshots the server and deletes it; the tailnet device is kept for the wake. */
export const hibernate = {
  args: noArgs,
  payload: 'agent',
  // hibernating → running/stopped: the attempt failed before any snapshot existed, so the server
  // (still there, as it was) is the truth again and the request can be made anew.
  instance: through(['running', 'stopped'], 'hibernating', 'hibernated'),
  agent: { active: ['hibernated'], paused: ['hibernated'] },
  // Shutdown, the snapshot (its own action deadline), the server's delete.
  stuck: { statuses: { hibernating: (t) => t.shutdownTimeoutMs + 3 * t.actionTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  command: {
    from: ['running', 'stopped', 'hibernating'],
    refusal: 'No running or stopped instance to hibernate',
    scope: 'operate',
    summary: 'Hibernate the agent: snapshot its server, then delete the server (the tailnet device is kept)',
    description:
      'Requires a running or stopped instance (or one whose hibernation is to be resumed). The agent then pays ' +
      'for its snapshot only; see GET /v1/fleet/cost.',
    cli: 'snapshot the agent’s server and delete it, keeping its tailnet device (pays for the snapshot only)',
  },
  run: (w, job, r, op) => w.hibernation.hibernate(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
