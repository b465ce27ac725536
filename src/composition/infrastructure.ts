import type { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';
import type { Config } from '../config';
import { createDataSource, createRepositories, type Repositories } from '../db';
import { createLogger, type Logger } from '../lib/logger';
import { createMetrics, type Metrics } from '../lib/metrics';
import { closeQueues, createProducerConnection, createQueues, createWorkerConnection, type Queues } from '../queues/queues';

/** Connections an API process opens and warms at start: enough for a burst of several hundred requests a second. */
const API_WARM_CONNECTIONS = 10;

export interface Infrastructure {
  logger: Logger;
  metrics: Metrics;
  dataSource: DataSource;
  /** Connections the API warms at start (0 for a worker-only process). */
  apiConnections: number;
  /** Fails fast when Redis is down (the API answers 503): queues add jobs through it. */
  producer: Redis;
  /** Worker roles only: waits through reconnects, shared by every worker. */
  workerConnection?: Redis;
  repositories: Repositories;
  queues: Queues;
  closeQueues(): Promise<void>;
  /** The Redis connections under the queues: after closeQueues. */
  closeRedis(): Promise<void>;
}

/** What every role stands on: logger and metrics, the database and its repositories, Redis and the queues. */
export function createInfrastructure(
  config: Config,
  roles: { api: boolean; workers: boolean },
  given: { logger?: Logger; metrics?: Metrics } = {},
): Infrastructure {
  const logger = given.logger ?? createLogger({ level: config.logLevel });
  const metrics = given.metrics ?? createMetrics({ defaultMetrics: true });
  // Workers hold a connection per query, not per job, but with every queue busy and the API taking
  // a burst, ten connections queued requests behind jobs (and vice versa); bounded well below
  // PostgreSQL's default max_connections even with several worker processes.
  const poolSize = roles.workers ? Math.min(30, 10 + config.queues.concurrency) : 10;
  // The API's connections are warmed at start (see warmAgentCommands) and kept, not closed when idle.
  const apiConnections = roles.api ? Math.min(poolSize, API_WARM_CONNECTIONS) : 0;
  const dataSource = createDataSource({
    url: config.databaseUrl,
    applicationName: `tailfleet-${config.role}`,
    poolSize,
    minConnections: apiConnections,
  });

  // Producers fail fast when Redis is down (the API answers 503); workers need a connection that
  // waits through reconnects. Only worker roles open the second one.
  const producer = createProducerConnection(config.redisUrl);
  const workerConnection: Redis | undefined = roles.workers ? createWorkerConnection(config.redisUrl) : undefined;
  for (const [name, conn] of [['producer', producer], ['worker', workerConnection]] as const) {
    conn?.on('error', (err) => logger.warn({ err: { message: err.message }, connection: name }, 'Redis connection error'));
  }

  const queues = createQueues({
    connection: producer,
    prefix: config.queues.prefix,
    defaults: { attempts: config.queues.attempts, backoffMs: config.queues.backoffMs },
  });
  // A Queue with no 'error' listener makes BullMQ print raw stack dumps to stderr whenever Redis
  // goes away (its console.error fallback); the connection errors above already say it in the log.
  for (const queue of Object.values(queues)) {
    queue.on('error', (err) => logger.debug({ err: { message: err.message }, queue: queue.name }, 'Queue error'));
  }

  return {
    logger,
    metrics,
    dataSource,
    apiConnections,
    producer,
    workerConnection,
    repositories: createRepositories(dataSource),
    queues,
    closeQueues: () => closeQueues(queues),
    async closeRedis() {
      await Promise.all([quit(producer), workerConnection ? quit(workerConnection) : undefined]);
    },
  };
}

async function quit(conn: Redis): Promise<void> {
  if (conn.status === 'end') return;
  try {
    await conn.quit();
  } catch {
    conn.disconnect();
  }
}
