// The reconciler moved to src/reconcile; this keeps the old import path valid for src/api until it
// imports from there.
export { Reconciler as ReconcilerService, ReconcileReports, reportGauges, stuckTimeouts } from '../reconcile';
export type { ReconcileReport } from '../reconcile';
