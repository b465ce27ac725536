export { HibernateWorkflow, wakeServerParams, type WakeResult } from './hibernate.workflow';
export { PowerWorkflow } from './power.workflow';
export { ProvisionWorkflow, type ProvisionInput } from './provision.workflow';
export { TeardownWorkflow, type RollbackResult } from './teardown.workflow';
export { silentReporter, type StepReporter } from './step-reporter';
export type { OperationContext, WorkflowDeps, WorkflowSettings } from './workflow-deps';
