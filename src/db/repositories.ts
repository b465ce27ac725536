import type { DataSource } from 'typeorm';
import { AgentRepository } from './agent.repository';
import { EventRepository } from './event.repository';
import { InstanceRepository } from './instance.repository';
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
  };
}
