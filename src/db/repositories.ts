import type { DataSource } from 'typeorm';
import { ActivityRepository } from './activity.repository';
import { AgentList } from './agent-list';
import { AgentRepository } from './agent.repository';
import { ApiTokenRepository } from './api-token.repository';
import { EventRepository } from './event.repository';
import { InstanceRepository } from './instance.repository';
import { LeaseRepository } from './lease.repository';
import { OperationList } from './operation-list';
import { OperationRepository } from './operation.repository';
import { OwnershipFindingRepository } from './ownership-finding.repository';
import { ProvisioningJobRepository } from './provisioning-job.repository';

export interface Repositories {
  agents: AgentRepository;
  instances: InstanceRepository;
  provisioningJobs: ProvisioningJobRepository;
  operations: OperationRepository;
  events: EventRepository;
  /** Refused destructive calls (ownership guard) and the audit events of every guarded call. */
  findings: OwnershipFindingRepository;
  tokens: ApiTokenRepository;
  /** What agents' machines report, their expiry, and the activity the policies count (src/policy). */
  activity: ActivityRepository;
  leases: LeaseRepository;
  /** Read models: the filtered, paged listings of agents and operations. */
  agentList: AgentList;
  operationList: OperationList;
}

export function createRepositories(dataSource: DataSource): Repositories {
  const deps = { dataSource };
  return {
    agents: new AgentRepository(deps),
    instances: new InstanceRepository(deps),
    provisioningJobs: new ProvisioningJobRepository(deps),
    operations: new OperationRepository(deps),
    events: new EventRepository(deps),
    findings: new OwnershipFindingRepository(deps),
    tokens: new ApiTokenRepository(deps),
    activity: new ActivityRepository(deps),
    leases: new LeaseRepository(deps),
    agentList: new AgentList(deps),
    operationList: new OperationList(deps),
  };
}
