import { noArgs, through, type OperationDescriptor } from './descriptor';

/** Graceful shutdown, then a forced power-off after the timeout; the agent pauses. */
export const stop = {
  args: noArgs,
  payload: 'agent',
  instance: through('running', 'stopping', 'stopped'),
  agent: { active: ['paused'] },
  stuck: { statuses: { stopping: (t) => t.shutdownTimeoutMs + t.actionTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  command: {
    from: ['running'],
    refusal: 'No running instance to stop',
    scope: 'operate',
    summary: 'Stop the agent (graceful shutdown, then power off after the timeout)',
    description: 'Requires a running instance.',
    cli: 'shut the agent down (graceful, then power off)',
  },
  run: (w, job, r, op) => w.power.stop(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
