import type { MigrationInterface } from 'typeorm';
import { HetznerProjectsAndPlacements1796700000000 } from './1796700000000-hetzner-projects-and-placements';
import { AgentActivityLeasesExpiry1796720000000 } from './1796720000000-agent-activity-leases-expiry';
import { PolicyWebhooks1796720000001 } from './1796720000001-policy-webhooks';
import { Pools1796710000000 } from './1796710000000-pools';
import { FindingResolutions1796572106392 } from './1796572106392-finding-resolutions';
import { OperationArgs1796600000000 } from './1796600000000-operation-args';
import { Reboot1796600000001 } from './1796600000001-reboot';
import { EventsReadNotNotified1796600000002 } from './1796600000002-events-read-not-notified';
import { WebhookSecretsSealed1796561172137 } from './1796561172137-webhook-secrets-sealed';
import { Webhooks1796041190446 } from './1796041190446-webhooks';
import { Hibernation1796041210393 } from './1796041210393-hibernation';
import { OwnershipFindings1796041285492 } from './1796041285492-ownership-findings';
import { AgentSpecsLabelsAndNames1796041613699 } from './1796041613699-agent-specs-labels-and-names';
import { ScopedIdempotencyKeysAndTokenActors1796045000000 } from './1796045000000-scoped-idempotency-keys-and-token-actors';
import { LedgerClaimsAndActors1796040043913 } from './1796040043913-ledger-claims-and-actors';
import { ApiTokensAndOperationListIndexes1796040064728 } from './1796040064728-api-tokens-and-operation-list-indexes';
import { ProvisioningJobAuthKeys1795730754702 } from './1795730754702-provisioning-job-auth-keys';
import { ReconcileReports1795726099311 } from './1795726099311-reconcile-reports';
import { InitialSchema1795725990969 } from './1795725990969-initial-schema';

// Every migration class, oldest first. scripts/db-migration-generate.ts appends new ones here.
export const migrations: Array<new () => MigrationInterface> = [InitialSchema1795725990969, ReconcileReports1795726099311, ProvisioningJobAuthKeys1795730754702, LedgerClaimsAndActors1796040043913, ApiTokensAndOperationListIndexes1796040064728, Webhooks1796041190446, Hibernation1796041210393, OwnershipFindings1796041285492, AgentSpecsLabelsAndNames1796041613699, ScopedIdempotencyKeysAndTokenActors1796045000000, WebhookSecretsSealed1796561172137, FindingResolutions1796572106392, OperationArgs1796600000000, Reboot1796600000001, EventsReadNotNotified1796600000002, HetznerProjectsAndPlacements1796700000000, Pools1796710000000, AgentActivityLeasesExpiry1796720000000, PolicyWebhooks1796720000001];
