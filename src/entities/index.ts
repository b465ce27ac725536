import { Agent } from './agent.entity';
import { ApiToken } from './api-token.entity';
import { Event } from './event.entity';
import { Instance } from './instance.entity';
import { AgentLease } from './lease.entity';
import { Operation } from './operation.entity';
import { OwnershipFinding } from './ownership-finding.entity';
import { Pool } from './pool.entity';
import { ProvisioningJob } from './provisioning-job.entity';
import { ReconcileReportRecord } from './reconcile-report.entity';
import { WebhookDelivery, WebhookSubscription } from './webhook.entity';

export * from './actor';
export * from './agent.entity';
export * from './api-token.entity';
export * from './event.entity';
export * from './instance.entity';
export * from './lease.entity';
export * from './operation.entity';
export * from './ownership-finding.entity';
export * from './pool.entity';
export * from './provisioning-job.entity';
export * from './reconcile-report.entity';
export * from './webhook.entity';

export const entities = [Agent, Instance, ProvisioningJob, Operation, Event, ReconcileReportRecord, ApiToken, WebhookSubscription, WebhookDelivery, OwnershipFinding, AgentLease, Pool];
