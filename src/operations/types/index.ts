import type { InstanceStatus } from '../../entities';
import type { AgentCommand, OperationDescriptor } from './descriptor';
import { claim } from './claim';
import { destroy } from './destroy';
import { hibernate } from './hibernate';
import { provision } from './provision';
import { reboot } from './reboot';
import { reconcile } from './reconcile';
import { rollback } from './rollback';
import { start } from './start';
import { stop } from './stop';
import { wake } from './wake';

export * from './descriptor';

/**
 * Every operation type and its descriptor: the operation_type enum (OPERATION_TYPES in the entities)
 * is this registry's keys, so a type has a descriptor by construction.
 */
export const OPERATIONS = {
  provision,
  stop,
  start,
  destroy,
  rollback,
  reconcile,
  hibernate,
  wake,
  reboot,
  claim,
} as const satisfies Record<string, OperationDescriptor>;

export type OperationType = keyof typeof OPERATIONS;

/**
 * The instance statuses the descriptors pass through on the way to a settled one (their `instance`
 * moves name them, typed against this list); the instance_status enum is the settled statuses
 * (src/entities/instance.entity.ts) and these.
 */
export const TRANSITIONAL_INSTANCE_STATUSES = [
  'provisioning',
  'stopping',
  'starting',
  'hibernating',
  'waking',
  'rebooting',
  'destroying',
] as const;
export type TransitionalInstanceStatus = (typeof TRANSITIONAL_INSTANCE_STATUSES)[number];

type Registry = typeof OPERATIONS;

/** Types whose deliveries run a workflow call (every type but those whose queue has its own worker). */
export type WorkedType = { [K in OperationType]: Registry[K] extends { run: unknown } ? K : never }[OperationType];
/** Types a client requests on an agent: `POST /v1/agents/:id/<type>`. */
export type AgentCommandType = { [K in OperationType]: Registry[K] extends { command: AgentCommand } ? K : never }[OperationType];
/** Instance statuses an operation may be left in half-way, which the reconciler watches. */
export type StuckStatus = {
  [K in OperationType]: Registry[K] extends { stuck: { statuses: infer S } } ? keyof S & InstanceStatus : never;
}[OperationType];

/** The registry's types, in its order (a non-empty tuple, as z.enum and the enum column take it). */
export const OPERATION_TYPE_NAMES = Object.keys(OPERATIONS) as unknown as readonly [OperationType, ...OperationType[]];

export function descriptorOf(type: OperationType): OperationDescriptor {
  return OPERATIONS[type];
}

export const WORKED_TYPES = OPERATION_TYPE_NAMES.filter((t): t is WorkedType => 'run' in OPERATIONS[t]);

export const AGENT_COMMAND_TYPES = OPERATION_TYPE_NAMES.filter((t): t is AgentCommandType => 'command' in OPERATIONS[t]);

export function commandOf(type: AgentCommandType): AgentCommand {
  return OPERATIONS[type].command;
}

/** Each watched status, the type that leaves an instance there and how long it may sit there. */
export const STUCK_STATUSES = OPERATION_TYPE_NAMES.flatMap((type) => {
  const stuck = (OPERATIONS[type] as OperationDescriptor).stuck;
  return stuck ? (Object.entries(stuck.statuses) as Array<[StuckStatus, NonNullable<(typeof stuck.statuses)[InstanceStatus]>]>).map(([status, timeout]) => ({ status, type, timeout, failedForGood: stuck.failedForGood })) : [];
});
