import { PolicyRequests } from '../../src/policy/requests';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import { createRepositories, insertOperation } from '../../src/db';
import type { Operation } from '../../src/entities';
import { silentLogger, type Logger } from '../../src/lib/logger';
import { OperationLedger } from '../../src/operations/ledger';
import { Outbox } from '../../src/operations/outbox';
import { jobIds, type Queues } from '../../src/queues/queues';
import { OperationReads } from '../../src/operations/read-models';
import { OperationsService, type OperationsDefaults } from '../../src/operations/requests';
import { PoolRepository } from '../../src/pools/pool.repository';
import { PoolsService } from '../../src/pools/pools.service';

/** A ledger over a test database, wired as the composition root wires it. */
export function ledgerFor(dataSource: DataSource, logger: Logger = silentLogger): OperationLedger {
  return new OperationLedger({ dataSource, repositories: createRepositories(dataSource), logger });
}

/** The API's command side over a test database and queues. */
export function operationsFor(deps: {
  dataSource: DataSource;
  queues: Queues;
  connection: Redis;
  defaults: OperationsDefaults;
  redisTimeoutMs?: number;
}): { operations: OperationsService; reads: OperationReads; ledger: OperationLedger; outbox: Outbox; policy: PolicyRequests; pools: PoolsService } {
  const ledger = ledgerFor(deps.dataSource);
  const outbox = new Outbox({ queues: deps.queues, connection: deps.connection, logger: silentLogger, redisTimeoutMs: deps.redisTimeoutMs });
  const repositories = createRepositories(deps.dataSource);
  const operations = new OperationsService({
    dataSource: deps.dataSource,
    queues: deps.queues,
    ledger,
    outbox,
    repositories,
    logger: silentLogger,
    defaults: deps.defaults,
    redisTimeoutMs: deps.redisTimeoutMs,
  });
  const reads = new OperationReads({ repositories, queues: deps.queues, logger: silentLogger, redisTimeoutMs: deps.redisTimeoutMs });
  const pools = new PoolsService({
    dataSource: deps.dataSource,
    pools: new PoolRepository({ dataSource: deps.dataSource }),
    agents: repositories.agents,
    operations,
    outbox,
    defaults: deps.defaults,
    logger: silentLogger,
  });
  const policy = new PolicyRequests({ repositories, maxLifetimeHours: null, logger: silentLogger });
  return { operations, reads, ledger, outbox, policy, pools };
}

/** An agent with a queued stop operation whose job id is the operation's own (no job added). */
export async function queuedStop(dataSource: DataSource): Promise<{ operation: Operation; agentId: string }> {
  const repos = createRepositories(dataSource);
  const bundle = await repos.agents.createWithProvision({ name: `agent-${randomUUID().slice(0, 8)}`, serverType: 'cx22', image: 'ubuntu-24.04' });
  const id = randomUUID();
  const { operation } = await insertOperation(dataSource, { type: 'stop', id, agentId: bundle.agent.id, queueJobId: jobIds.operation(id) });
  return { operation, agentId: bundle.agent.id };
}
