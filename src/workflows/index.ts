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
import { RebootWorkflow } from './reboot.workflow';
import { TeardownWorkflow } from './teardown.workflow';
import type { WorkflowDeps } from './workflow-deps';

/** The workflows the operation descriptors call (src/operations/types), built once per worker role. */
export function createWorkflows(deps: WorkflowDeps) {
  return {
    provision: new ProvisionWorkflow(deps),
    power: new PowerWorkflow(deps),
    teardown: new TeardownWorkflow(deps),
    hibernation: new HibernateWorkflow(deps),
    reboot: new RebootWorkflow(deps),
    claim: new ClaimWorkflow(deps),
  };
}
export type Workflows = ReturnType<typeof createWorkflows>;
