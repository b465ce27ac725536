import { noArgs, type OperationDescriptor } from './descriptor';

/** Powers a stopped server on; the agent is active again. */
export const start = {
  args: noArgs,
  payload: 'agent',
  // starting → stopped: a failed attempt puts the instance back, so the job can retry from there.
  instance: { stopped: ['starting'], starting: ['running', 'stopped'] },
  agent: { paused: ['active'] },
  command: {
    from: ['stopped'],
    refusal: 'No stopped instance to start',
    scope: 'operate',
    summary: 'Start a stopped agent',
    description: 'Requires a stopped instance.',
    cli: 'power a stopped agent on',
  },
  stuck: { statuses: { starting: (t) => t.actionTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  run: (w, job, r, op) => w.power.start(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
