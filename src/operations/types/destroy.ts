import { noArgs, type OperationDescriptor } from './descriptor';

/**
 * Deletes the server and the tailnet device. Every live instance may be destroyed (`*`: each status
 * that is neither terminal nor `destroying` itself), and a destroy cannot be undone: one that cannot
 * confirm the server and device are gone keeps retrying in `destroying`.
 */
export const destroy = {
  args: noArgs,
  payload: 'agent',
  instance: { '*': ['destroying'], destroying: ['destroyed'] },
  agent: { '*': ['destroyed'] },
  stuck: { statuses: { destroying: (t) => 2 * t.actionTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  command: {
    from: 'any',
    scope: 'operate',
    summary: 'Destroy the agent: delete its server and tailnet device',
    description: 'Allowed in any state except destroyed.',
    cli: 'delete the agent’s server and tailnet device',
  },
  run: (w, job, r, op) => w.teardown.destroy(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
