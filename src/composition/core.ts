import type { Config } from '../config';
import { HetznerClient } from '../clients/hetzner/hetzner.client';
import { HetznerProjects } from '../clients/hetzner/projects';
import { EventNotifications } from '../events/notifications';
import { INSTANCE_LABEL } from '../fleet/server-labels';
import { CloudCredentialHealth, metricsObserver, observeAll } from '../clients/observers';
import type { Logger } from '../lib/logger';
import { OperationLedger } from '../operations/ledger';
import { ReconcileReports } from '../reconcile';
import { Outbox } from '../operations/outbox';
import { CloudCatalogue } from '../clients/hetzner/catalogue';
import { OperationsService } from '../operations/requests';
import { PoolRepository } from '../pools/pool.repository';
import { PoolsService } from '../pools/pools.service';
import { provisionFailureHook } from '../operations/rollback-listener';
import { WebhookRepository } from '../webhooks/webhook.repository';
import { WebhookSecretBox } from '../webhooks/secret-box';
import type { Infrastructure } from './infrastructure';
import type { TailfleetOverrides } from './overrides';

export interface Core {
  /** The operation ledger: every status change of an operation. */
  ledger: OperationLedger;
  /** Delivers accepted operations to their queues. */
  outbox: Outbox;
  operations: OperationsService;
  /** The current project's client (HetznerProjects.client): the only project's outside an operation. */
  hetzner: HetznerClient;
  /** HETZNER_PROJECTS (or HETZNER_API_TOKEN as `default`): one client, and rate budget, each. */
  projects: HetznerProjects;
  /** Worker roles only: whether the clouds accept the configured credentials (shown on /readyz). */
  cloudHealth?: CloudCredentialHealth;
  notifications: EventNotifications;
  webhooks: WebhookRepository;
  /** Reconcile reports: kept by the worker role's passes, read and requested by the API. */
  reports: ReconcileReports;
  /** Pools: managed and claimed through the API, kept stocked by the worker role's pool policy. */
  pools: PoolsService;
  poolRepository: PoolRepository;
}

/** What both roles share: the ledger and outbox, the operations, the Hetzner client, event notifications, webhooks. */
export function createCore(
  config: Config,
  infra: Infrastructure,
  roles: { api: boolean; workers: boolean },
  overrides: Pick<TailfleetOverrides, 'hetzner' | 'rollbackListener'>,
): Core {
  const { dataSource, repositories, queues, logger, metrics } = infra;
  const ledger = new OperationLedger({ dataSource, repositories, logger: logger.child({ component: 'ledger' }) });
  const outbox = new Outbox({ queues, connection: infra.producer, logger: logger.child({ component: 'outbox' }) });
  // One Hetzner client per process. Workers change the cloud through it (and readiness reports whether
  // it accepts our credentials); the API only reads through it: the catalogue (server types,
  // locations) that checks a create before it is accepted, and the prices behind agent costs and
  // GET /v1/fleet/cost.
  const cloudHealth = roles.workers ? new CloudCredentialHealth() : undefined;
  // One client per project: each has its own token and its own rate-limit budget, so a 429 in one
  // project never slows the others (an override's shared limiter, if any, is not shared across them).
  const several = config.hetzner.projects.length > 1;
  const projects = new HetznerProjects(
    config.hetzner.projects.map((p) => ({
      name: p.name,
      maxServers: p.maxServers,
      client: new HetznerClient({
        baseUrl: config.hetzner.apiUrl,
        token: p.token,
        tokenSetting: several ? `HETZNER_PROJECTS (project ${p.name})` : undefined,
        logger: logger.child({ component: 'hetzner', ...(several ? { project: p.name } : {}) }),
        observer: cloudHealth ? observeAll(metricsObserver(metrics), cloudHealth) : metricsObserver(metrics),
        actionPollIntervalMs: config.pollIntervalMs,
        serverPollIntervalMs: config.pollIntervalMs,
        actionTimeoutMs: config.hetzner.actionTimeoutSeconds * 1000,
        // Every server tailfleet makes carries its instance's id: status polls list just the servers waited for.
        identityLabel: INSTANCE_LABEL,
        ...overrides.hetzner,
        ...(several ? { rateLimiter: undefined } : {}),
      }),
    })),
  );
  const hetzner = projects.client;
  const operations = new OperationsService({
    dataSource,
    queues,
    ledger,
    outbox,
    repositories,
    logger: logger.child({ component: 'operations' }),
    defaults: {
      serverType: config.hetzner.serverType,
      image: config.hetzner.image,
      location: config.hetzner.location,
      sshKeys: config.hetzner.sshKeys,
      placements: config.hetzner.placements,
      publicIpv4: config.hetzner.publicIpv4,
      reporter: config.policy.publicUrl !== null,
      maxLifetimeHours: config.policy.maxAgentLifetimeHours,
    },
    maxAgents: config.maxAgents,
    // API roles check a create's server type and location against the cloud's catalogue before
    // accepting it (GET /server_types, GET /locations, cached).
    catalogue: roles.api ? new CloudCatalogue({ hetzner, logger: logger.child({ component: 'catalogue' }) }) : undefined,
  });
  // The one final-failure hook: a provision that failed for good is marked so and rolled back
  // (`rollbackListener: false` leaves the rollback to a later sweep).
  ledger.onFinalFailure(provisionFailureHook({ dataSource, operations, rollback: overrides.rollbackListener !== false }));

  const notifications = new EventNotifications({
    connectionString: config.databaseUrl,
    logger: logger.child({ component: 'event-listener' }),
    applicationName: `tailfleet-${config.role}-listener`,
  });
  const webhooks = new WebhookRepository({ dataSource, secrets: new WebhookSecretBox(config.webhooks.secretKeys) });
  const reports = new ReconcileReports({ dataSource, repositories, ledger, outbox });
  const poolRepository = new PoolRepository({ dataSource });
  const pools = new PoolsService({
    dataSource,
    pools: poolRepository,
    agents: repositories.agents,
    operations,
    outbox,
    defaults: {
      serverType: config.hetzner.serverType,
      image: config.hetzner.image,
      location: config.hetzner.location,
      sshKeys: config.hetzner.sshKeys,
      reporter: config.policy.publicUrl !== null,
    },
    logger: logger.child({ component: 'pools' }),
  });
  return { ledger, outbox, operations, hetzner, projects, cloudHealth, notifications, webhooks, reports, pools, poolRepository };
}

/** Webhook secrets in clear or under a rotated-out key are sealed with WEBHOOK_SECRET_KEY (see secret-box.ts). */
export async function sealWebhookSecrets(config: Config, webhooks: WebhookRepository, logger: Logger): Promise<void> {
  if (!config.webhooks.secretKeys) {
    logger.warn('WEBHOOK_SECRET_KEY is not set: webhook secrets are stored in the clear (set it to encrypt them at rest)');
    return;
  }
  const { resealed, unreadable } = await webhooks.resealSecrets();
  if (resealed > 0) logger.info({ resealed }, 'Webhook secrets encrypted with the current WEBHOOK_SECRET_KEY');
  if (unreadable.length > 0) {
    logger.error(
      { subscriptions: unreadable },
      'Webhook secrets encrypted with a key that is not configured: add it to WEBHOOK_SECRET_KEYS_PREVIOUS, or their deliveries fail',
    );
  }
}
