import { expect } from 'chai';
import sinon from 'sinon';
import type { DataSource } from 'typeorm';
import { isRetryable } from '../../src/clients/errors';
import { HetznerClient } from '../../src/clients/hetzner/hetzner.client';
import { TailscaleClient } from '../../src/clients/tailscale/tailscale.client';
import { AgentRepository } from '../../src/db/agent.repository';
import { createRepositories, type Repositories } from '../../src/db/repositories';
import { insertOperation } from '../../src/db/operation.repository';
import { AUDIT_ACTIONS, OwnershipGuard } from '../../src/fleet/ownership-guard';
import { Agent, Event, Instance, ProvisioningJob, type OperationType } from '../../src/entities';
import { Fleet } from '../../src/fleet/fleet';
import { silentLogger } from '../../src/lib/logger';
import { SIM_DEFAULT_CREDENTIALS, startSimulator, type RunningSimulator, type SimTimingsInput } from '../../src/simulator';
import {
  HibernateWorkflow,
  PowerWorkflow,
  ProvisionWorkflow,
  TeardownWorkflow,
  type StepReporter,
  type WorkflowDeps,
  type WorkflowSettings,
} from '../../src/workflows';
import { createTestDatabase, truncateAll, type TestDatabase } from './db';

/** Fast but ordered: every action still runs asynchronously, enrollment still follows boot. */
export const FAST_TIMINGS: SimTimingsInput = {
  actionDurationMs: 20,
  imageMsPerGb: 1,
  bootMs: 10,
  enrollDelayMs: 10,
  shutdownMs: 20,
  ignoreAcpiRate: 0,
  rateLimit: { limit: 1_000_000, refillPerSecond: 1_000_000 },
};

export const FAST_SETTINGS: WorkflowSettings = {
  serverType: 'cx22',
  image: 'ubuntu-24.04',
  location: 'fsn1',
  sshKeys: [],
  shutdownTimeoutMs: 300,
  enrollmentTimeoutMs: 3000,
  actionTimeoutMs: 3000,
};

const FAST_CLIENT = {
  requestTimeoutMs: 3000,
  maxRetries: 3,
  retryBaseDelayMs: 10,
  retryMaxDelayMs: 40,
  maxRateLimitWaitMs: 1000,
};

export interface LifecycleHarness {
  db: TestDatabase;
  ds: DataSource;
  sim: RunningSimulator;
  hetzner: HetznerClient;
  tailscale: TailscaleClient;
  /** The fleet the workflows belong to (`default` unless the harness was started with another). */
  fleet: Fleet;
  repositories: Repositories;
  provision: ProvisionWorkflow;
  power: PowerWorkflow;
  teardown: TeardownWorkflow;
  hibernation: HibernateWorkflow;
  /** Workflow deps as the harness built them, for a test that needs workflows with other settings. */
  workflowDeps: WorkflowDeps;
  agents: AgentRepository;
  /** Back to an empty database and (unless the simulator was handed in) an empty cloud with FAST_TIMINGS. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export interface LifecycleHarnessOptions {
  /** A simulator shared with other harnesses (several fleets in one cloud); its owner resets and closes it. */
  sim?: RunningSimulator;
  /** FLEET_NAME of the workflows; `default` when omitted. */
  fleet?: string;
}

/** Real PostgreSQL (own database), the simulator on a random port, the real clients over HTTP. */
export async function startLifecycleHarness(
  label: string,
  settings: Partial<WorkflowSettings> = {},
  options: LifecycleHarnessOptions = {},
): Promise<LifecycleHarness> {
  const db = await createTestDatabase(label, { poolSize: 10 });
  const ownSim = !options.sim;
  const sim = options.sim ?? (await startSimulator({ timings: FAST_TIMINGS, seed: 7 }));
  const fleet = new Fleet(options.fleet);
  const hetzner = new HetznerClient({
    baseUrl: sim.hetznerUrl,
    token: SIM_DEFAULT_CREDENTIALS.hetznerToken,
    ...FAST_CLIENT,
    actionPollIntervalMs: 10,
    serverPollIntervalMs: 10,
  });
  const tailscale = new TailscaleClient({
    baseUrl: sim.tailscaleUrl,
    clientId: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
    clientSecret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
    ...FAST_CLIENT,
    enrollmentPollIntervalMs: 10,
  });
  const repositories = createRepositories(db.dataSource);
  const workflowDeps: WorkflowDeps = {
    dataSource: db.dataSource,
    repositories,
    hetzner,
    tailscale,
    fleet,
    guard: new OwnershipGuard({ hetzner, tailscale, fleet, audit: repositories.findings, logger: silentLogger }),
    logger: silentLogger,
    settings: { ...FAST_SETTINGS, ...settings },
  };
  return {
    db,
    ds: db.dataSource,
    sim,
    hetzner,
    tailscale,
    fleet,
    repositories,
    provision: new ProvisionWorkflow(workflowDeps),
    power: new PowerWorkflow(workflowDeps),
    teardown: new TeardownWorkflow(workflowDeps),
    hibernation: new HibernateWorkflow(workflowDeps),
    workflowDeps,
    agents: repositories.agents,
    async reset() {
      if (ownSim) sim.control.reset(FAST_TIMINGS);
      await truncateAll(db.dataSource);
    },
    async close() {
      if (ownSim) await sim.close();
      await db.drop();
    },
  };
}

/**
 * Registers the suite hooks every lifecycle test file needs (start before, close after, empty database
 * and cloud before each test, sinon restored after each) and returns the harness, filled in by `before`.
 */
export function useLifecycleHarness(label: string): LifecycleHarness {
  const h = {} as LifecycleHarness;
  let started = false;
  before(async () => {
    Object.assign(h, await startLifecycleHarness(label));
    started = true;
  });
  after(async () => {
    if (started) await h.close();
  });
  beforeEach(async () => {
    await h.reset();
  });
  afterEach(() => {
    sinon.restore();
  });
  return h;
}

export interface AgentFixture {
  agentId: string;
  instanceId: string;
  provisioningJobId: string;
  provisionOperationId: string;
}

export async function newAgent(h: LifecycleHarness, name = 'build-box'): Promise<AgentFixture> {
  const bundle = await h.agents.createWithProvision({ name, serverType: 'cx22', image: 'ubuntu-24.04', location: 'fsn1' });
  return {
    agentId: bundle.agent.id,
    instanceId: bundle.instance.id,
    provisioningJobId: bundle.job.id,
    provisionOperationId: bundle.operation.id,
  };
}

export async function provisionedAgent(h: LifecycleHarness, name?: string): Promise<AgentFixture> {
  const a = await newAgent(h, name);
  await h.provision.provision({ provisioningJobId: a.provisioningJobId, operationId: a.provisionOperationId });
  return a;
}

export async function newOperation(h: LifecycleHarness, type: OperationType, agentId: string): Promise<string> {
  return (await insertOperation(h.ds, { type, agentId })).operation.id;
}

export async function rows(h: LifecycleHarness, a: { agentId: string; instanceId: string; provisioningJobId?: string }) {
  const agent = await h.ds.getRepository(Agent).findOneByOrFail({ id: a.agentId });
  const instance = await h.ds.getRepository(Instance).findOneByOrFail({ id: a.instanceId });
  const job = a.provisioningJobId ? await h.ds.getRepository(ProvisioningJob).findOneByOrFail({ id: a.provisioningJobId }) : null;
  return { agent, instance, job };
}

/** "from→to" of every status change of one row, oldest first (creation events show as "∅→to"); audit events of guarded cloud calls left out. */
export async function transitionsOf(h: LifecycleHarness, entityId: string): Promise<string[]> {
  const events = await h.ds.getRepository(Event).find({ where: { entityId }, order: { id: 'ASC' } });
  return events
    .filter((e) => !(AUDIT_ACTIONS as readonly string[]).includes(e.toStatus))
    .map((e) => `${e.fromStatus ?? '∅'}→${e.toStatus}`);
}

export function serverCreates(h: LifecycleHarness): number {
  return h.sim.control.requestCounts()['POST /hetzner/v1/servers'] ?? 0;
}

export function cloud(h: LifecycleHarness) {
  const state = h.sim.control.state();
  return { servers: state.servers, devices: state.devices, authKeys: state.authKeys, images: state.images };
}

/** Collects progress reports, as a processor would forward them to BullMQ. */
export function recordingReporter(): StepReporter & { steps: Array<{ name: string; progress: number }> } {
  const steps: Array<{ name: string; progress: number }> = [];
  return {
    steps,
    async step(name, progress) {
      steps.push({ name, progress });
    },
  };
}

export async function expectRejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  expect.fail('expected the promise to reject');
}

/**
 * Runs an operation the way its queue would: a retryable failure (a `locked` server while another
 * action runs, a 5xx) is tried again after a backoff, anything else is final.
 */
export async function withQueueRetries<T>(fn: () => Promise<T>, attempts = 5, backoffMs = 30): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts || !isRetryable(err)) throw err;
      await new Promise((r) => setTimeout(r, backoffMs));
    }
  }
}

/** The promise's error, or null if it resolved; attached at once so no rejection goes unhandled. */
export function settle(p: Promise<unknown>): Promise<Error | null> {
  return p.then(
    () => null,
    (err: Error) => err,
  );
}

/** Polls `check` until it returns a value (not undefined) or the deadline passes. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) expect.fail(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
