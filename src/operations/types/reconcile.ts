import { noArgs, type OperationDescriptor } from './descriptor';

/**
 * A reconcile pass (scheduled or requested). Its queue has its own worker (one pass at a time,
 * src/processors/reconcile.processor.ts), so it names no workflow call. The pass may find a
 * machine lost behind tailfleet's back: the instance fails and the agent goes to `error`.
 */
export const reconcile = {
  args: noArgs,
  payload: 'reconcile',
  instance: { running: ['failed'], stopped: ['failed'] },
  agent: { active: ['error'], paused: ['error'] },
} satisfies OperationDescriptor<'reconcile'>;
