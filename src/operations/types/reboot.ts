import { noArgs, type OperationDescriptor } from './descriptor';

/** Its workflow, loaded on the first delivery: descriptors load no workflow code (see ./descriptor.ts). */
const workflow = () =>
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  (require('../../workflows/reboot.workflow') as typeof import('../../workflows/reboot.workflow')).RebootWorkflow;

/**
 * Restarts the agent's machine in place: the ACPI reboot signal, then a reset (power cut and back
 * on, through the ownership guard) when the tailnet device has not dropped off and come back within
 * the shutdown timeout. It succeeds only once the device is online again.
 */
export const reboot = {
  args: noArgs,
  payload: 'agent',
  // rebooting → destroying: a destroy may take the machine mid-reboot, as from any live status.
  instance: { running: ['rebooting'], rebooting: ['running'] },
  agent: {},
  // The graceful attempt, the reset and the device's return.
  stuck: { statuses: { rebooting: (t) => t.shutdownTimeoutMs + 2 * t.actionTimeoutMs + t.enrollmentTimeoutMs + t.marginMs }, failedForGood: 'repair' },
  command: {
    from: ['running', 'rebooting'],
    refusal: 'No running instance to reboot',
    scope: 'operate',
    summary: 'Reboot the agent (ACPI reboot, then a reset when it does not come back within the timeout)',
    description:
      'Requires a running instance (or one whose reboot is to be resumed). Succeeds once the tailnet device is ' +
      'online again after the restart.',
    cli: 'restart the agent’s machine (graceful, then reset) and wait for its tailnet device',
  },
  run: (w, job, r, op) => w.own(workflow).reboot(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
