import { z } from 'zod';
import type { AgentStatus, InstanceStatus } from '../../entities';
import type { AgentJobData, ProvisionJobData, ReconcileJobData, RollbackJobData } from '../../queues/queues';
import type { StepReporter } from '../../workflows/step-reporter';
import type { OperationContext, Workflows } from '../../workflows';
import type { TransitionalInstanceStatus } from './index';

/**
 * What one operation type is, in one place: everything that differs between a stop and a wake is
 * declared by its descriptor, and the queues, processors, the ledger's accept statement, the API
 * contract and routes, the CLI, the transition table and the reconciler's stuck check are derived
 * from the registry of descriptors (./index.ts).
 *
 * Descriptors import values from nothing but zod, so the entities, the transition table and the CLI
 * can read the registry without loading the workflows: a descriptor names its workflow call against
 * the type of the workflows object, which the worker role builds once (createWorkflows in
 * src/workflows/index.ts). A type with a workflow class of its own loads that module on its first
 * delivery and hands it to `workflows.own(…)`, which builds it once (src/operations/types/reboot.ts):
 * adding such a type touches no shared list but the registry. Each module writes
 * `{ … } satisfies OperationDescriptor<kind>`, which keeps its literal shape for the registry's
 * derived types.
 */

/** The shape of the ids a type's job carries (payloads are ids only; see src/queues/queues.ts). */
export interface PayloadOf {
  agent: AgentJobData;
  provision: ProvisionJobData;
  rollback: RollbackJobData;
  reconcile: ReconcileJobData;
}
export type PayloadKind = keyof PayloadOf;

/**
 * Moves a type makes, from → the statuses it may go to; the transition table is their union. `*`
 * stands for every status that is not terminal (nor the target itself).
 */
export type Moves<S extends string> = { readonly [F in S | '*']?: readonly S[] };

/** The deadlines a stuck check is derived from (the workflow settings of the same names). */
export interface StuckInputs {
  actionTimeoutMs: number;
  shutdownTimeoutMs: number;
  enrollmentTimeoutMs: number;
  /** Slack for queueing and backoff between attempts. */
  marginMs: number;
}

/** A request on an agent: `POST /v1/agents/:id/<type>` and `tailfleet <type> <agent>`. */
export type AgentCommand = {
  /** Token scope the route needs. */
  scope: 'operate';
  /** The contract's summary and description of the route. */
  summary: string;
  description: string;
  /** The CLI's help line for the verb. */
  cli: string;
} & (
  | {
      /**
       * The live instance statuses the request is accepted from (a transitional one of its own means
       * a resumed attempt), checked by the ledger's accept statement.
       */
      from: readonly InstanceStatus[];
      /** The 409 when the instance is in none of them: the rule, written once. */
      refusal: string;
    }
  /** Every agent that is not destroyed, even while another command of it runs. */
  | { from: 'any' }
);

export interface OperationDescriptor<P extends PayloadKind = PayloadKind> {
  /** The operation row's `args`, validated when the operation is accepted and when it is claimed. */
  args: z.ZodType<Record<string, unknown>>;
  /** What its job carries. */
  payload: P;
  /** The instance and agent moves it makes (with the undo of a failed attempt). */
  instance: Moves<InstanceStatus>;
  agent: Moves<AgentStatus>;
  /**
   * The transitional instance statuses it leaves behind when it stops half-way, each with the time
   * it may legitimately sit there; the reconciler puts the operation back on its queue after that.
   * `rollback`: a provision that failed for good is not retried, the rollback owns it.
   */
  stuck?: { statuses: { readonly [S in InstanceStatus]?: (t: StuckInputs) => number }; failedForGood: 'repair' | 'rollback' };
  /** Present when an API client (and the CLI) may request it on an agent. */
  command?: AgentCommand;
  /**
   * The workflow call a delivery of its job makes, with the operation's context (its id, and `finish`:
   * the last moves committed with the operation's success); absent when its queue has its own worker.
   */
  run?(workflows: Workflows, job: { id?: string; data: PayloadOf[P] }, reporter: StepReporter, operation: OperationContext): Promise<unknown>;
}

/** No arguments: `{}`, and nothing else. */
export const noArgs = z.object({}).strict();

/**
 * The instance moves of a reversible operation: from its settled status (or any of several) through
 * its transitional `via` to `to`, and back to where it was when an attempt fails, so the request can
 * be retried (or made anew) from there.
 */
export function through(from: InstanceStatus | readonly InstanceStatus[], via: TransitionalInstanceStatus, to: InstanceStatus): Moves<InstanceStatus> {
  const froms = typeof from === 'string' ? [from] : from;
  const moves: { [S in InstanceStatus]?: InstanceStatus[] } = {};
  for (const f of froms) moves[f] = [via];
  moves[via] = [to, ...froms];
  return moves;
}
