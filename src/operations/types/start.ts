import { noArgs, through, type OperationDescriptor } from './descriptor';

/** Powers a stopped server on; the agent is active again. */
export const start = {
  args: noArgs,
  payload: 'agent',
  instance: through('stopped', 'starting', 'running'),
  agent: { paused: ['active'] },
  stuck: { statuses: { starting: (t) => t.actionTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  command: {
    from: ['stopped'],
    refusal: 'No stopped instance to start',
    scope: 'operate',
    summary: 'Start a stopped agent',
    description: 'Requires a stopped instance.',
    cli: 'power a stopped agent on',
  },
  run: (w, job, r, op) => w.power.start(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
