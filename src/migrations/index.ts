import type { MigrationInterface } from 'typeorm';
import { ProvisioningJobAuthKey1795728505134 } from './1795728505134-provisioning-job-auth-key';
import { ReconcileReports1795726099311 } from './1795726099311-reconcile-reports';
import { InitialSchema1795725990969 } from './1795725990969-initial-schema';

// Every migration class, oldest first. scripts/db-migration-generate.ts appends new ones here.
export const migrations: Array<new () => MigrationInterface> = [InitialSchema1795725990969, ReconcileReports1795726099311, ProvisioningJobAuthKey1795728505134];
