// The lifecycle service became the workflows in src/workflows; this keeps the reporter type's old
// import path valid until every importer uses src/workflows/step-reporter.
export type { StepReporter } from '../workflows/step-reporter';
