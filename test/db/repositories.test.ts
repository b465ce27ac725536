import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import {
  GuardedUpdateConflictError,
  IdempotencyKeyConflictError,
  LiveInstanceExistsError,
  RecordNotFoundError,
  ServerIdConflictError,
  TransitionConflictError,
} from '../../src/db/errors';
import { createRepositories, type Repositories } from '../../src/db/repositories';
import { hydrate, transition } from '../../src/db/transitions';
import { Agent, Event, Instance, Operation, ProvisioningJob } from '../../src/entities';
import { createTestDatabase, type TestDatabase, truncateAll } from '../helpers/db';

const SPEC = { serverType: 'cx22', image: 'ubuntu-24.04', location: 'fsn1' };

describe('db: repositories', () => {
  let db: TestDatabase;
  let ds: DataSource;
  let repos: Repositories;

  before(async () => {
    db = await createTestDatabase('repositories', { poolSize: 6 });
    ds = db.dataSource;
    repos = createRepositories(ds);
  });

  after(async () => {
    await db?.drop();
  });

  beforeEach(async () => {
    await truncateAll(ds);
  });

  async function setStatus(table: string, id: string, status: string): Promise<void> {
    await ds.query(`UPDATE ${table} SET status = $2 WHERE id = $1`, [id, status]);
  }

  describe('agents.createWithProvision', () => {
    it('creates agent, pending instance, queued job and provision operation with their creation events', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC, serverName: 'alpha-1' });
      expect(b.created).to.equal(true);
      expect(b.agent).to.be.instanceOf(Agent);
      expect(b.agent).to.include({ name: 'alpha', status: 'draft' });
      expect(b.instance).to.include({ agentId: b.agent.id, status: 'pending', serverType: 'cx22', location: 'fsn1' });
      expect(b.instance).to.include({ serverName: 'alpha-1', serverId: null, image: 'ubuntu-24.04' });
      expect(b.job).to.include({ agentId: b.agent.id, instanceId: b.instance.id, status: 'queued', attempts: 0 });
      expect(b.operation).to.include({
        type: 'provision',
        status: 'queued',
        agentId: b.agent.id,
        provisioningJobId: b.job.id,
        progress: 0,
      });
      const events = await repos.events.listForAgent(b.agent.id);
      expect(events.map((e) => [e.entityType, e.fromStatus, e.toStatus])).to.deep.equal([
        ['agent', null, 'draft'],
        ['operation', null, 'queued'],
        ['instance', null, 'pending'],
        ['provisioning_job', null, 'queued'],
      ]);
      expect(events.slice(1).every((e) => e.operationId === b.operation.id)).to.equal(true);
    });

    it('returns the first request for a repeated idempotency key, without new rows', async () => {
      const first = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC, idempotencyKey: 'req-1' });
      const again = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC, idempotencyKey: 'req-1' });
      expect(again.created).to.equal(false);
      expect(again.agent.id).to.equal(first.agent.id);
      expect(again.instance.id).to.equal(first.instance.id);
      expect(again.job.id).to.equal(first.job.id);
      expect(again.operation.id).to.equal(first.operation.id);
      expect(await ds.getRepository(Agent).count()).to.equal(1);
    });

    it('creates exactly one bundle when the same key arrives concurrently', async () => {
      const results = await Promise.all(
        [1, 2, 3, 4, 5].map(() => repos.agents.createWithProvision({ name: 'beta', ...SPEC, idempotencyKey: 'req-2' })),
      );
      expect(results.filter((r) => r.created)).to.have.length(1);
      expect(new Set(results.map((r) => r.operation.id)).size).to.equal(1);
      expect(await ds.getRepository(Agent).count()).to.equal(1);
      expect(await ds.getRepository(Instance).count()).to.equal(1);
      expect(await ds.getRepository(ProvisioningJob).count()).to.equal(1);
    });

    it('refuses a key already used for a different kind of request', async () => {
      await repos.operations.create({ type: 'reconcile', idempotencyKey: 'req-3' });
      const err = await repos.agents
        .createWithProvision({ name: 'gamma', ...SPEC, idempotencyKey: 'req-3' })
        .catch((e: unknown) => e);
      expect(err).to.be.instanceOf(IdempotencyKeyConflictError);
      expect(await ds.getRepository(Agent).count()).to.equal(0);
    });
  });

  describe('agents.provisionAgain', () => {
    it('re-provisions an agent in error with a new instance', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      await setStatus('instances', b.instance.id, 'failed');
      await setStatus('agents', b.agent.id, 'error');
      const again = await repos.agents.provisionAgain(b.agent.id, SPEC);
      expect(again.agent.status).to.equal('provisioning');
      expect(again.instance.id).to.not.equal(b.instance.id);
      expect(again.instance.status).to.equal('pending');
      expect(again.operation.provisioningJobId).to.equal(again.job.id);
      expect((await repos.instances.findLiveByAgent(b.agent.id))?.id).to.equal(again.instance.id);
    });

    it('refuses while a live instance exists, and for an agent not in error', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      await setStatus('agents', b.agent.id, 'error');
      const live = await repos.agents.provisionAgain(b.agent.id, SPEC).catch((e: unknown) => e);
      expect(live).to.be.instanceOf(LiveInstanceExistsError);

      await setStatus('instances', b.instance.id, 'failed');
      await setStatus('agents', b.agent.id, 'active');
      const wrong = await repos.agents.provisionAgain(b.agent.id, SPEC).catch((e: unknown) => e);
      expect(wrong).to.be.instanceOf(TransitionConflictError);
      expect(await ds.getRepository(Instance).count()).to.equal(1);
      expect(await ds.getRepository(Operation).count()).to.equal(1);
    });
  });

  describe('agents', () => {
    it('finds by id (null for unknown or malformed ids) and lists newest first, filtered by status', async () => {
      const a = await repos.agents.createWithProvision({ name: 'a', ...SPEC });
      const b = await repos.agents.createWithProvision({ name: 'b', ...SPEC });
      await setStatus('agents', a.agent.id, 'destroyed');
      expect((await repos.agents.findById(a.agent.id))?.name).to.equal('a');
      expect(await repos.agents.findById('00000000-0000-4000-8000-000000000000')).to.equal(null);
      expect(await repos.agents.findById('nope')).to.equal(null);
      expect((await repos.agents.list()).map((x) => x.name)).to.deep.equal(['b', 'a']);
      const live = await repos.agents.list({ statuses: ['draft', 'active'] });
      expect(live.map((x) => x.id)).to.deep.equal([b.agent.id]);
    });
  });

  describe('instances', () => {
    it('finds the live instance, and after it is destroyed only the latest one', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      expect((await repos.instances.findLiveByAgent(b.agent.id))?.id).to.equal(b.instance.id);
      await setStatus('instances', b.instance.id, 'destroyed');
      expect(await repos.instances.findLiveByAgent(b.agent.id)).to.equal(null);
      expect((await repos.instances.findLatestByAgent(b.agent.id))?.status).to.equal('destroyed');
    });

    it('records the server id while provisioning, accepts the same id again, refuses another', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      const big = '9007199254740993';
      const set = await repos.instances.setServer(b.instance.id, {
        serverId: big,
        serverName: 'alpha-1',
        serverIp: '203.0.113.7',
      });
      expect(set).to.include({ serverId: big, serverName: 'alpha-1', serverIp: '203.0.113.7', status: 'pending' });
      const again = await repos.instances.setServer(b.instance.id, { serverId: big });
      expect(again.serverName).to.equal('alpha-1');
      const other = await repos.instances.setServer(b.instance.id, { serverId: '42' }).catch((e: unknown) => e);
      expect(other).to.be.instanceOf(ServerIdConflictError);
      expect(other).to.include({ actualServerId: big, actualStatus: 'pending' });
      expect((await repos.instances.findByServerId(big)).map((i) => i.id)).to.deep.equal([b.instance.id]);
    });

    it('refuses a server id once the instance has left pending/provisioning', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      await setStatus('instances', b.instance.id, 'destroying');
      const err = await repos.instances.setServer(b.instance.id, { serverId: '7' }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ServerIdConflictError);
      expect(err).to.include({ actualServerId: null, actualStatus: 'destroying' });
      expect((await repos.instances.findById(b.instance.id))?.serverId).to.equal(null);
    });

    it('rejects malformed server ids and unknown instances', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      for (const bad of ['', '0', '-1', '1.5', '1e3', '99999999999999999999']) {
        const err = await repos.instances.setServer(b.instance.id, { serverId: bad }).catch((e: unknown) => e);
        expect(err, bad).to.be.instanceOf(TypeError);
      }
      const err = await repos.instances
        .setServer('00000000-0000-4000-8000-000000000000', { serverId: '1' })
        .catch((e: unknown) => e);
      expect(err).to.be.instanceOf(RecordNotFoundError);
    });

    it('records the tailnet device on a live instance only', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      await setStatus('instances', b.instance.id, 'provisioning');
      const set = await repos.instances.setDevice(b.instance.id, {
        tailscaleDeviceId: 'n123',
        tailscaleIp: '100.64.0.9',
        tailscaleHostname: 'alpha-1',
      });
      expect(set).to.include({ tailscaleDeviceId: 'n123', tailscaleIp: '100.64.0.9', tailscaleHostname: 'alpha-1' });
      await setStatus('instances', b.instance.id, 'failed');
      const err = await repos.instances
        .setDevice(b.instance.id, { tailscaleDeviceId: 'n999', tailscaleIp: null })
        .catch((e: unknown) => e);
      expect(err).to.be.instanceOf(GuardedUpdateConflictError);
      expect((await repos.instances.findById(b.instance.id))?.tailscaleDeviceId).to.equal('n123');
    });
  });

  describe('operations', () => {
    it('creates once per idempotency key for the same request and refuses the key for another', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      const first = await repos.operations.create({ type: 'stop', agentId: b.agent.id, idempotencyKey: 'stop-1' });
      const again = await repos.operations.create({ type: 'stop', agentId: b.agent.id, idempotencyKey: 'stop-1' });
      expect(first.created).to.equal(true);
      expect(again).to.deep.include({ created: false });
      expect(again.operation.id).to.equal(first.operation.id);
      const other = await repos.operations
        .create({ type: 'destroy', agentId: b.agent.id, idempotencyKey: 'stop-1' })
        .catch((e: unknown) => e);
      expect(other).to.be.instanceOf(IdempotencyKeyConflictError);
      expect((await repos.operations.findByIdempotencyKey('stop-1'))?.id).to.equal(first.operation.id);
      const created = await ds.getRepository(Event).countBy({ entityId: first.operation.id });
      expect(created, 'one creation event').to.equal(1);
    });

    it('finds the active operation of an agent', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      expect((await repos.operations.findActiveByAgent(b.agent.id))?.id).to.equal(b.operation.id);
      await setStatus('operations', b.operation.id, 'succeeded');
      expect(await repos.operations.findActiveByAgent(b.agent.id)).to.equal(null);
      const stop = await repos.operations.create({ type: 'stop', agentId: b.agent.id });
      expect((await repos.operations.findActiveByAgent(b.agent.id))?.id).to.equal(stop.operation.id);
      expect((await repos.operations.listByAgent(b.agent.id)).map((o) => o.type)).to.deep.equal(['stop', 'provision']);
    });

    it('updates job id, attempts and error, and reports progress only while running', async () => {
      const { operation } = await repos.operations.create({ type: 'reconcile' });
      const updated = await repos.operations.update(operation.id, { queueJobId: 'reconcile:1', attempts: 2, error: 'x' });
      expect(updated).to.include({ queueJobId: 'reconcile:1', attempts: 2, error: 'x' });
      expect(updated.updatedAt.getTime()).to.be.at.least(operation.updatedAt.getTime());

      expect(await repos.operations.reportProgress(operation.id, 50, 'create-server')).to.equal(false);
      await transition(ds, { entity: 'operation', id: operation.id, from: ['queued'], to: 'running', reason: 'go' });
      expect(await repos.operations.reportProgress(operation.id, 150, 'create-server')).to.equal(true);
      expect(await repos.operations.findById(operation.id)).to.include({ progress: 100, currentStep: 'create-server' });
      expect(await repos.operations.reportProgress(operation.id, 42)).to.equal(true);
      expect(await repos.operations.findById(operation.id)).to.include({ progress: 42, currentStep: 'create-server' });

      const err = await repos.operations
        .update('00000000-0000-4000-8000-000000000000', { attempts: 1 })
        .catch((e: unknown) => e);
      expect(err).to.be.instanceOf(RecordNotFoundError);
      expect(await repos.operations.findById('not-a-uuid')).to.equal(null);
    });
  });

  describe('provisioning jobs', () => {
    it('finds jobs by agent, instance and status, and updates attempts and the failed step', async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      expect((await repos.provisioningJobs.findLatestByAgent(b.agent.id))?.id).to.equal(b.job.id);
      expect((await repos.provisioningJobs.findByInstance(b.instance.id))?.id).to.equal(b.job.id);
      await setStatus('provisioning_jobs', b.job.id, 'failed');
      expect((await repos.provisioningJobs.listByStatus(['failed'])).map((j) => j.id)).to.deep.equal([b.job.id]);
      expect(await repos.provisioningJobs.listByStatus(['rolled_back'])).to.deep.equal([]);
      const updated = await repos.provisioningJobs.update(b.job.id, { attempts: 3, failedStep: 'wait-enrollment' });
      expect(updated).to.include({ attempts: 3, failedStep: 'wait-enrollment' });
    });
  });

  describe('events', () => {
    it("lists an agent's history in order, with paging", async () => {
      const b = await repos.agents.createWithProvision({ name: 'alpha', ...SPEC });
      await transition(ds, {
        entity: 'instance',
        id: b.instance.id,
        from: ['pending'],
        to: 'provisioning',
        reason: 'provision started',
        operationId: b.operation.id,
      });
      await transition(ds, { entity: 'agent', id: b.agent.id, from: ['draft'], to: 'provisioning', reason: 'provision started' });
      const all = await repos.events.listForAgent(b.agent.id);
      expect(all.map((e) => e.toStatus)).to.deep.equal(['draft', 'queued', 'pending', 'queued', 'provisioning', 'provisioning']);
      const page = await repos.events.listForAgent(b.agent.id, { afterId: all[3]!.id, limit: 1 });
      expect(page.map((e) => e.id)).to.deep.equal([all[4]!.id]);
      const instanceEvents = await repos.events.listForEntity('instance', b.instance.id);
      expect(instanceEvents.map((e) => e.toStatus)).to.deep.equal(['pending', 'provisioning']);
      expect(await repos.events.listForAgent('nope')).to.deep.equal([]);
    });
  });

  describe('hydrate', () => {
    it('reads a row, or its row_to_json, into the same entity as TypeORM does, for every table', async () => {
      const b = await repos.agents.createWithProvision({ name: 'hydrated', ...SPEC, serverName: 'hydrated-1' });
      await ds.query(`UPDATE agents SET labels = '{"team":"a"}', expires_at = now() WHERE id = $1`, [b.agent.id]);
      let compared = 0;
      for (const target of [Agent, Instance, ProvisioningJob, Operation, Event]) {
        const metadata = ds.getMetadata(target);
        const expected = await ds.getRepository(target).find();
        expect(expected, metadata.tableName).to.have.length.greaterThan(0);
        const rows: Array<Record<string, unknown>> = await ds.query(`SELECT * FROM ${metadata.tableName}`);
        // row_to_json writes a bigint as a JSON number, where the driver reads a string: the json form is
        // used only for tables without one (operations, whose accepted row comes back that way).
        const hasBigint = metadata.columns.some((c) => c.type === 'bigint');
        const jsonRows: Array<{ row: Record<string, unknown> }> = hasBigint ? [] : await ds.query(`SELECT row_to_json(t) AS row FROM ${metadata.tableName} t`);
        const byId = (id: unknown) => expected.find((e) => (e as { id: unknown }).id === id);
        for (const raw of [...rows, ...jsonRows.map((r) => r.row)]) {
          const entity = hydrate(ds.manager, target as new () => object, raw);
          expect(entity).to.be.instanceOf(target);
          expect(entity, metadata.tableName).to.deep.equal(byId(raw.id));
          compared++;
        }
      }
      expect(compared).to.be.greaterThan(10);
    });
  });
});
