import { noArgs, type OperationDescriptor } from './descriptor';

/** Graceful shutdown, then a forced power-off after the timeout; the agent pauses. */
export const stop = {
  args: noArgs,
  payload: 'agent',
  // stopping → running: a failed attempt puts the instance back, so the job can retry from there.
  instance: { running: ['stopping'], stopping: ['stopped', 'running'] },
  agent: { active: ['paused'] },
  command: {
    from: ['running'],
    refusal: 'No running instance to stop',
    scope: 'operate',
    summary: 'Stop the agent (graceful shutdown, then power off after the timeout)',
    description: 'Requires a running instance.',
    cli: 'shut the agent down (graceful, then power off)',
  },
  stuck: { statuses: { stopping: (t) => t.shutdownTimeoutMs + t.actionTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  run: (w, job, r, op) => w.power.stop(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
