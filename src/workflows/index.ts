export { HibernateWorkflow, wakeServerParams, type WakeResult } from './hibernate.workflow';
export { PowerWorkflow } from './power.workflow';
export { ProvisionWorkflow, type ProvisionInput } from './provision.workflow';
export { TeardownWorkflow, type RollbackResult } from './teardown.workflow';
export { silentReporter, type StepReporter } from './step-reporter';
export type { OperationContext, WorkflowDeps, WorkflowSettings } from './workflow-deps';

import { ClaimWorkflow } from './claim.workflow';
import { HibernateWorkflow } from './hibernate.workflow';
import { PowerWorkflow } from './power.workflow';
import { ProvisionWorkflow } from './provision.workflow';
import { TeardownWorkflow } from './teardown.workflow';
import type { WorkflowDeps } from './workflow-deps';

/** A workflow class an operation type brings itself, built from the worker's dependencies. */
export type WorkflowClass<W> = new (deps: WorkflowDeps) => W;

/** The workflows the operation descriptors call (src/operations/types), built once per worker role. */
export function createWorkflows(deps: WorkflowDeps) {
  const own = new Map<WorkflowClass<unknown>, unknown>();
  return {
    /**
     * The workflow of a type that brings its own (loaded by its descriptor on first use), built once:
     * a new operation type adds its workflow without touching this list.
     */
    own<W>(load: () => WorkflowClass<W>): W {
      const Workflow = load();
      if (!own.has(Workflow)) own.set(Workflow, new Workflow(deps));
      return own.get(Workflow) as W;
    },
    provision: new ProvisionWorkflow(deps),
    power: new PowerWorkflow(deps),
    teardown: new TeardownWorkflow(deps),
    hibernation: new HibernateWorkflow(deps),
    claim: new ClaimWorkflow(deps),
  };
}
export type Workflows = ReturnType<typeof createWorkflows>;
