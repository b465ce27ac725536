import { PolicyLoop } from '../policy/policy-loop';
import { SYSTEM_ACTOR } from '../entities';
import type { Worker } from 'bullmq';
import { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { Config } from '../config';
import { Fleet } from '../fleet/fleet';
import { OwnershipGuard } from '../fleet/ownership-guard';
import { metricsObserver, observeAll } from '../clients/observers';
import { OutboxRelay } from '../operations/relay';
import { createProcessors } from '../processors';
import { createReconcileProcessor, createReconcileWorker, ensureReconcileSchedule, scheduleReconcile } from '../processors/reconcile.processor';
import { webhookJobOptions } from '../queues/queues';
import { Reconciler, stuckTimeouts } from '../reconcile';
import { RollbackListener } from '../operations/rollback-listener';
import { PoolPolicy } from '../pools/pool-policy';
import { createWebhookProcessor, createWebhookWorker } from '../webhooks/delivery.processor';
import { WebhookRelay } from '../webhooks/delivery-relay';
import { createWorkers, DEFAULT_WORKER_SETTINGS, type WorkerPool } from '../workers';
import { createWorkflows, type WorkflowDeps, type Workflows } from '../workflows';
import { RedisCapacityStore } from '../workflows/placement';
import type { Core } from './core';
import type { Infrastructure } from './infrastructure';
import type { TailfleetOverrides } from './overrides';
import { settlesWithin } from '../lib/time';
import type { ShutdownStep } from './shutdown-step';

export interface WorkerRole {
  /** What the process shows of its worker role (Tailfleet's fields). */
  parts: WorkerParts;
  /** Starts fetching operation jobs and the rollback sweep (once the database is up and migrated). */
  start(): Promise<void>;
  /** Then, once the event listener is up: the webhook and reconcile workers, the relays (a pass at once). */
  startLoops(): Promise<void>;
  /** No new jobs; in-flight ones finish or, past `drainMs`, are left for another worker. */
  drain(drainMs: number, step: ShutdownStep): Promise<void>;
  /** The loops that may be half-way through a pass: the rollback sweep, the relays. */
  closeLoops(step: ShutdownStep): Promise<void>;
}

export interface WorkerParts {
  /** The workflows the processors call. */
  workflows: Workflows;
  workers: WorkerPool;
  rollbackListener?: RollbackListener;
  /** Re-delivers accepted operations whose job Redis does not hold. */
  relay: OutboxRelay;
  /** Drift reconciler and orphan sweeper, run by the reconcile queue's worker. */
  reconciler: Reconciler;
  /** Hands webhook deliveries written by the events trigger to the webhooks queue. */
  webhookRelay: WebhookRelay;
  /** Idle ladders, expiry and auto-hibernate (src/policy): one pass per interval for the whole fleet. */
  policyLoop: PolicyLoop;
  /** Keeps every pool at its minReady (one process of the fleet at a time). */
  poolPolicy: PoolPolicy;
}

/** A worker process: the workflows behind each operation queue, the webhook and reconcile workers, the sweeps and relays. */
export function createWorkerRole(config: Config, infra: Infrastructure, core: Core, overrides: TailfleetOverrides): WorkerRole {
  const { dataSource, repositories, queues, logger, metrics } = infra;
  const { ledger, outbox, hetzner, projects, operations, webhooks } = core;
  const connection = infra.workerConnection!;
  const tailscale = new TailscaleClient({
    baseUrl: config.tailscale.apiUrl,
    clientId: config.tailscale.clientId,
    clientSecret: config.tailscale.clientSecret,
    tailnet: config.tailscale.tailnet,
    tags: config.tailscale.tags,
    logger: logger.child({ component: 'tailscale' }),
    observer: core.cloudHealth ? observeAll(metricsObserver(metrics), core.cloudHealth) : metricsObserver(metrics),
    enrollmentPollIntervalMs: config.pollIntervalMs,
    enrollmentTimeoutMs: config.tailscale.enrollmentTimeoutSeconds * 1000,
    ...overrides.tailscale,
  });
  const fleet = new Fleet(config.fleetName);
  // One guard for every destructive call of the process: the workflows' and the reconciler's.
  const guard = new OwnershipGuard({ hetzner, tailscale, fleet, audit: repositories.findings, logger: logger.child({ component: 'ownership' }) });
  const workflowDeps: WorkflowDeps = {
    dataSource,
    repositories,
    hetzner,
    projects,
    capacity: new RedisCapacityStore({ redis: infra.producer, prefix: config.queues.prefix }),
    tailscale,
    fleet,
    guard,
    logger: logger.child({ component: 'workflow' }),
    settings: {
      serverType: config.hetzner.serverType,
      image: config.hetzner.image,
      location: config.hetzner.location,
      sshKeys: config.hetzner.sshKeys,
      shutdownTimeoutMs: config.hetzner.shutdownTimeoutSeconds * 1000,
      enrollmentTimeoutMs: config.tailscale.enrollmentTimeoutSeconds * 1000,
      actionTimeoutMs: config.hetzner.actionTimeoutSeconds * 1000,
      placements: config.hetzner.placements,
      placementCooldownMs: config.hetzner.placementCooldownSeconds * 1000,
      publicIpv4: config.hetzner.publicIpv4,
      publicUrl: config.policy.publicUrl,
    },
  };
  const workflows = createWorkflows(workflowDeps);
  const handledFailures = new Set<string>();
  const workers = createWorkers({
    connection,
    prefix: config.queues.prefix,
    concurrency: config.queues.concurrency,
    processors: createProcessors({
      ledger,
      handledFailures,
      outageRetryMs: config.queues.dbOutageRetryMs,
      workflows,
      logger: logger.child({ component: 'processor' }),
      metrics,
      queues,
      // Each operation runs in the Hetzner project of its instance (one project: nothing to look up).
      inProject: (data, run) =>
        projects.single ? projects.within(null, run) : repositories.instances.projectOf(data).then((project) => projects.within(project, run)),
    }),
    ledger,
    operations: repositories.operations,
    handledFailures,
    logger,
    settings: overrides.worker,
  });
  const rollbackListener =
    overrides.rollbackListener === false
      ? undefined
      : new RollbackListener({
          dataSource,
          operations,
          provisioningJobs: repositories.provisioningJobs,
          logger: logger.child({ component: 'rollback-listener' }),
          sweepIntervalMs: config.queues.rollbackSweepIntervalSeconds * 1000,
        });
  const reconciler = new Reconciler({
    dataSource,
    repositories,
    ledger,
    outbox,
    hetzner,
    projects,
    tailscale,
    queues,
    fleet,
    guard,
    reports: core.reports,
    logger: logger.child({ component: 'reconciler' }),
    metrics,
    settings: {
      orphans: config.reconcile.orphans,
      graceSeconds: config.reconcile.graceSeconds,
      tags: config.tailscale.tags,
      stuckAfterMs: stuckTimeouts({
        actionTimeoutMs: config.hetzner.actionTimeoutSeconds * 1000,
        shutdownTimeoutMs: config.hetzner.shutdownTimeoutSeconds * 1000,
        enrollmentTimeoutMs: config.tailscale.enrollmentTimeoutSeconds * 1000,
      }),
    },
  });
  const reconcileWorker = createReconcileWorker({
    connection,
    prefix: config.queues.prefix,
    processor: createReconcileProcessor({ ledger, logger: logger.child({ component: 'processor' }), metrics, queue: queues.reconcile, reconciler }),
    logger,
  });
  const webhookWorker = createWebhookWorker({
    connection,
    prefix: config.queues.prefix,
    concurrency: config.queues.concurrency,
    processor: createWebhookProcessor({
      webhooks,
      allowPrivateUrls: config.webhooks.allowPrivateUrls,
      timeoutMs: config.webhooks.timeoutMs,
      logger: logger.child({ component: 'webhooks' }),
    }),
    webhooks,
    logger,
    settings: overrides.worker,
  });
  const webhookRelay = new WebhookRelay({
    webhooks,
    queue: queues.webhooks,
    connection: infra.producer,
    jobOptions: webhookJobOptions(config.webhooks),
    logger: logger.child({ component: 'webhook-relay' }),
    intervalMs: config.queues.relayIntervalMs,
  });
  core.notifications.subscribe(webhookRelay);
  const relay = new OutboxRelay({
    dataSource,
    operations: repositories.operations,
    ledger,
    outbox,
    logger: logger.child({ component: 'relay' }),
    intervalMs: config.queues.relayIntervalMs,
    runningGraceMs: overrides.worker?.lockDurationMs ?? DEFAULT_WORKER_SETTINGS.lockDurationMs,
    ensureSchedulers: async () => {
      if (await ensureReconcileSchedule(queues.reconcile, config.reconcile.intervalSeconds)) {
        logger.warn('Reconcile job scheduler was missing from Redis; re-created');
      }
    },
  });

  const policyLoop = new PolicyLoop({
    dataSource,
    activity: repositories.activity,
    actor: {
      request: async (action, agentId, reason) => ({
        operationId: (await operations.requestCommand(action, agentId, { requestedBy: SYSTEM_ACTOR, reason })).operation.id,
      }),
    },
    logger: logger.child({ component: 'policy' }),
    intervalMs: config.policy.intervalSeconds * 1000,
    settings: {
      expiryWarningMs: config.policy.expiryWarningSeconds * 1000,
      autoHibernateAfterMs: config.reconcile.autoHibernateAfterHours === null ? null : config.reconcile.autoHibernateAfterHours * 3_600_000,
      maxLifetimeHours: config.policy.maxAgentLifetimeHours,
    },
    now: overrides.policyClock,
  });
  const poolPolicy = new PoolPolicy({
    dataSource,
    pools: core.poolRepository,
    service: core.pools,
    operations,
    outbox,
    // Refills may all land in one project: a tenth of the smallest project's budget is a tenth of any one's.
    requestBudget: () => ({ limit: Math.min(...core.projects.list.map((p) => p.client.rateLimiter.state().limit ?? 3600)) }),
    logger: logger.child({ component: 'pool-policy' }),
    intervalMs: config.policy.intervalSeconds * 1000,
    ...(overrides.poolClock ? { now: overrides.poolClock } : {}),
  });

  const runWorker = (worker: Worker, queue: string) =>
    worker.run().catch((err: unknown) => logger.error({ err, queue }, 'Worker stopped with an error'));
  const drainWorker = async (worker: Worker, drainMs: number, late: string) => {
    if (!(await settlesWithin(worker.close(), drainMs))) logger.warn({ drainMs }, late);
  };

  return {
    parts: { workflows, workers, rollbackListener, relay, reconciler, webhookRelay, policyLoop, poolPolicy },
    async start() {
      await connection.ping();
      workers.run();
      rollbackListener?.start();
    },
    async drain(drainMs, step) {
      // The reconcile worker drains alongside, under the same deadline: a pass cut short is re-run
      // from scratch by the next worker (its lock expires, BullMQ requeues it).
      await Promise.all([
        step('workers', async () => {
          const { drained } = await workers.close(drainMs);
          logger.info({ drained }, drained ? 'Workers drained' : 'Workers stopped before their jobs finished');
        }),
        step('webhook-worker', () =>
          drainWorker(webhookWorker, drainMs, 'Webhook deliveries still running at the drain deadline; leaving them for another worker'),
        ),
        step('reconcile-worker', () =>
          drainWorker(reconcileWorker, drainMs, 'Reconcile pass still running at the drain deadline; leaving it for another worker'),
        ),
      ]);
    },
    async startLoops() {
      void runWorker(webhookWorker, 'webhooks');
      webhookRelay.start();
      void runWorker(reconcileWorker, 'reconcile');
      await scheduleReconcile(queues.reconcile, config.reconcile.intervalSeconds);
      // A pass at start, then every few seconds: whatever was accepted while no worker ran, or lost
      // by Redis, reaches the queue.
      relay.start();
      policyLoop.start();
      if (overrides.poolPolicy !== false) poolPolicy.start();
    },
    async closeLoops(step) {
      if (rollbackListener) await step('rollback-listener', () => rollbackListener.close());
      await step('relay', () => relay.close());
      await step('policy', () => policyLoop.close());
      await step('webhook-relay', () => webhookRelay.close());
      await step('pool-policy', () => poolPolicy.close());
    },
  };
}
