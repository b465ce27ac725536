import type { MigrationInterface } from 'typeorm';
import { OwnershipFindings1796041285492 } from './1796041285492-ownership-findings';
import { LedgerClaimsAndActors1796040043913 } from './1796040043913-ledger-claims-and-actors';
import { ApiTokensAndOperationListIndexes1796040064728 } from './1796040064728-api-tokens-and-operation-list-indexes';
import { ProvisioningJobAuthKeys1795730754702 } from './1795730754702-provisioning-job-auth-keys';
import { ReconcileReports1795726099311 } from './1795726099311-reconcile-reports';
import { InitialSchema1795725990969 } from './1795725990969-initial-schema';

// Every migration class, oldest first. scripts/db-migration-generate.ts appends new ones here.
export const migrations: Array<new () => MigrationInterface> = [InitialSchema1795725990969, ReconcileReports1795726099311, ProvisioningJobAuthKeys1795730754702, LedgerClaimsAndActors1796040043913, ApiTokensAndOperationListIndexes1796040064728, OwnershipFindings1796041285492];
