import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Job } from 'bullmq';
import IORedis, { type Redis } from 'ioredis';
import { transition } from '../../src/db/transitions';
import { Agent, Event, Instance, Operation } from '../../src/entities';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { closeQueues, createQueues, type Queues } from '../../src/queues/queues';
import { Reconciler, type ReconcilerSettings } from '../../src/reconcile';
import type { OperationLedger } from '../../src/operations/ledger';
import { Outbox } from '../../src/operations/outbox';
import { ledgerFor } from '../helpers/ledger';
import {
  newOperation,
  provisionedAgent,
  startLifecycleHarness,
  type AgentFixture,
  type LifecycleHarness,
  type LifecycleHarnessOptions,
} from '../helpers/lifecycle';

import { STUCK_STATUSES } from '../../src/operations/types';
import { ReconcileReports } from '../../src/reconcile/reports';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

// A minute in every status a stuck operation can leave an instance in (the descriptors name them).
export const STUCK_AFTER = Object.fromEntries(STUCK_STATUSES.map((s) => [s.status, 60_000])) as ReconcilerSettings['stuckAfterMs'];

export interface ReconcileHarness {
  h: LifecycleHarness;
  queues: Queues;
  connection: Redis;
  prefix: string;
  metrics: Metrics;
  /** The ledger and outbox a reconciler requeues stuck operations through. */
  delivery: { ledger: OperationLedger; outbox: Outbox };
  reconciler(settings?: Partial<ReconcilerSettings>, now?: () => number): Reconciler;
  /** The simulator's control API over HTTP: the "someone in the console" of these tests. */
  simApi(method: string, path: string, body?: unknown): Promise<any>;
  agent(name: string): Promise<AgentFixture & { serverId: string; deviceId: string }>;
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** Real PostgreSQL, the simulator over HTTP, real BullMQ queues under a prefix of their own. */
export async function startReconcileHarness(label: string, options: LifecycleHarnessOptions = {}): Promise<ReconcileHarness> {
  const h = await startLifecycleHarness(label, {}, options);
  const connection = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
  const prefix = `tf-test-${label}-${randomBytes(4).toString('hex')}`;
  const queues = createQueues({ connection, prefix, defaults: { attempts: 3, backoffMs: 10 } });
  const metrics = createMetrics();
  const delivery = { ledger: ledgerFor(h.ds), outbox: new Outbox({ queues, connection, logger: silentLogger }) };

  const obliterate = async () => {
    for (const q of Object.values(queues)) await q.obliterate({ force: true });
  };

  return {
    h,
    queues,
    connection,
    prefix,
    metrics,
    delivery,
    reconciler(settings = {}, now) {
      return new Reconciler({
        dataSource: h.ds,
        repositories: h.repositories,
        ...delivery,
        hetzner: h.hetzner,
        tailscale: h.tailscale,
        queues,
        fleet: h.fleet,
        guard: h.workflowDeps.guard,
        reports: new ReconcileReports({ dataSource: h.ds, repositories: h.repositories, ...delivery }),
        logger: silentLogger,
        metrics,
        settings: { orphans: 'report', graceSeconds: 0, tags: ['tag:agent'], stuckAfterMs: STUCK_AFTER, lockWaitMs: 5000, ...settings },
        now,
      });
    },
    async simApi(method, path, body) {
      const res = await fetch(`${h.sim.url}/_sim${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      expect(res.ok, `${method} /_sim${path} → ${res.status} ${text}`).to.equal(true);
      return text ? JSON.parse(text) : undefined;
    },
    async agent(name) {
      const a = await provisionedAgent(h, name);
      const instance = await h.ds.getRepository(Instance).findOneByOrFail({ id: a.instanceId });
      expect(instance.status).to.equal('running');
      return { ...a, serverId: instance.serverId!, deviceId: instance.tailscaleDeviceId! };
    },
    async reset() {
      await h.reset();
      await obliterate();
    },
    async close() {
      await obliterate().catch(() => undefined);
      await closeQueues(queues);
      await connection.quit();
      await h.close();
    },
  };
}

export async function instanceOf(r: ReconcileHarness, id: string): Promise<Instance> {
  return r.h.ds.getRepository(Instance).findOneByOrFail({ id });
}

export async function agentOf(r: ReconcileHarness, id: string): Promise<Agent> {
  return r.h.ds.getRepository(Agent).findOneByOrFail({ id });
}

export async function operationOf(r: ReconcileHarness, id: string): Promise<Operation> {
  return r.h.ds.getRepository(Operation).findOneByOrFail({ id });
}

export async function eventsOf(r: ReconcileHarness, entityId: string): Promise<Event[]> {
  return r.h.ds.getRepository(Event).find({ where: { entityId }, order: { id: 'ASC' } });
}

/** Puts an operation in `running` as a worker would when it claims the job. */
export async function claimOperation(r: ReconcileHarness, type: Operation['type'], agentId: string): Promise<string> {
  const id = await newOperation(r.h, type, agentId);
  await transition(r.h.ds, { entity: 'operation', id, from: ['queued'], to: 'running', reason: 'test: worker claimed it' });
  return id;
}

/** Counted cloud requests since the last reset, keyed as the simulator counts them. */
export function requestCounts(r: ReconcileHarness): Record<string, number> {
  return r.h.sim.control.requestCounts();
}

export async function stateOf(job: Job | undefined): Promise<string> {
  return job ? job.getState() : 'missing';
}
