export { Reconciler, ReconcileBusyError } from './reconciler';
export { ReconcileReports, reportGauges, type ReconcileReportsDeps } from './reports';
export { stuckTimeouts } from './stuck';
export type * from './types';
