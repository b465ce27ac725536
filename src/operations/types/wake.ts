import { noArgs, through, type OperationDescriptor } from './descriptor';

/** A new server from the hibernation snapshot, back as the same tailnet device. */
export const wake = {
  args: noArgs,
  payload: 'agent',
  // waking → hibernated: no server exists yet, the snapshot is still the agent.
  instance: through('hibernated', 'waking', 'running'),
  agent: { hibernated: ['active'] },
  // Create and boot, the device coming back (or a fresh join after a second create), the snapshot's delete.
  stuck: { statuses: { waking: (t) => 4 * t.actionTimeoutMs + 2 * t.enrollmentTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  command: {
    from: ['hibernated', 'waking'],
    refusal: 'No hibernated instance to wake',
    scope: 'operate',
    summary: 'Wake a hibernated agent: a new server from its snapshot, back as the same tailnet device',
    description:
      'Requires a hibernated instance (or one whose waking is to be resumed). The snapshot is deleted once the ' +
      'device is back online. If it does not come back, the machine joins the tailnet again with a new auth key ' +
      'as a new device, and the operation ends on step `rejoined` instead of `done`.',
    cli: 'bring a hibernated agent back on a new server from its snapshot, as the same tailnet device',
  },
  run: (w, job, r, op) => w.hibernation.wake(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
