import { expect } from 'chai';
import { transition } from '../../src/db/transitions';
import { Agent, Event, Operation, ProvisioningJob } from '../../src/entities';
import { buildOpenApiDocument } from '../../src/api/contract';
import { AGENT_COMMAND_TYPES } from '../../src/operations/types';
import { QUEUE_NAMES } from '../../src/queues/queues';
import { ContractValidator } from '../helpers/contract';
import { API_TOKEN, BOARD, DEFAULTS, jobIdsIn, markRunning, startApiHarness, type ApiHarness } from './harness';

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

function expectProblem(res: { status: number; headers: Headers; body: any; text: string }, status: number, kind: string) {
  expect(res.status, res.text).to.equal(status);
  expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
  expect(res.body).to.include({ type: `urn:tailfleet:problem:${kind}`, status });
  expect(res.body.title).to.be.a('string').with.length.greaterThan(0);
  expect(res.body.detail).to.be.a('string').with.length.greaterThan(0);
  // Never a stack trace or an internal file path.
  expect(res.text).not.to.match(/\bat .+\(.*:\d+:\d+\)|node_modules|\.ts:\d+/);
}

describe('HTTP API', () => {
  let h: ApiHarness;

  before(async () => {
    h = await startApiHarness('api');
  });

  after(async () => {
    await h?.close();
  });

  async function createAgent(name: string, headers: Record<string, string> = {}) {
    const res = await h.api.request('POST', '/v1/agents', { body: { name }, headers });
    expect(res.status, res.text).to.be.oneOf([200, 201]);
    return res.body as { agent: { id: string }; operation: { id: string }; provisioningJob: { id: string } };
  }

  async function counts() {
    const [agents, operations, events] = await Promise.all([
      h.ds.getRepository(Agent).count(),
      h.ds.getRepository(Operation).count(),
      h.ds.getRepository(Event).count(),
    ]);
    const jobs: Record<string, number> = {};
    for (const [name, queue] of Object.entries(h.queues)) jobs[name] = (await jobIdsIn(queue)).length;
    return { agents, operations, events, jobs };
  }

  describe('probes', () => {
    it('answers /healthz and /readyz without a token', async () => {
      const health = await h.api.request('GET', '/healthz', { token: null });
      expect(health.status).to.equal(200);
      expect(health.body).to.deep.equal({ status: 'ok' });

      const ready = await h.api.request('GET', '/readyz', { token: null });
      expect(ready.status).to.equal(200);
      expect(ready.body).to.deep.equal({ status: 'ready' });
    });

    it('echoes a valid X-Request-Id and makes one up otherwise', async () => {
      const given = await h.api.request('GET', '/healthz', { headers: { 'x-request-id': 'req-abc.123' } });
      expect(given.headers.get('x-request-id')).to.equal('req-abc.123');
      const made = await h.api.request('GET', '/healthz', { headers: { 'x-request-id': 'bad id with spaces' } });
      expect(made.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
      const problem = await h.api.request('GET', `/v1/agents/${UNKNOWN_ID}`, { headers: { 'x-request-id': 'trace-404' } });
      expect(problem.body.requestId).to.equal('trace-404');
    });
  });

  describe('authentication', () => {
    it('refuses /v1 without a token and with a wrong one', async () => {
      const missing = await h.api.request('GET', '/v1/agents', { token: null });
      expectProblem(missing, 401, 'unauthorized');
      expect(missing.headers.get('www-authenticate')).to.match(/^Bearer realm="tailfleet"/);

      const wrong = await h.api.request('GET', '/v1/agents', { token: `${API_TOKEN}x` });
      expectProblem(wrong, 401, 'unauthorized');
      expect(wrong.headers.get('www-authenticate')).to.contain('invalid_token');

      const basic = await h.api.request('GET', '/v1/agents', {
        token: null,
        headers: { authorization: `Basic ${Buffer.from(`x:${API_TOKEN}`).toString('base64')}` },
      });
      expectProblem(basic, 401, 'unauthorized');
    });

    it('does not create anything for an unauthenticated command', async () => {
      const before = await counts();
      const res = await h.api.request('POST', '/v1/agents', { token: null, body: { name: 'sneaky' } });
      expectProblem(res, 401, 'unauthorized');
      expect(await counts()).to.deep.equal(before);
    });
  });

  describe('POST /v1/agents', () => {
    it('creates agent, instance, provisioning job and operation, and queues the provision with ids only', async () => {
      const res = await h.api.request('POST', '/v1/agents', { body: { name: 'build-box-1', location: 'nbg1' } });
      expect(res.status, res.text).to.equal(201);
      const { agent, instance, operation, provisioningJob, job, links } = res.body;
      expect(res.headers.get('location')).to.equal(`/v1/agents/${agent.id}`);
      expect(agent).to.include({ name: 'build-box-1', status: 'draft' });
      expect(instance).to.include({ agentId: agent.id, status: 'pending', location: 'nbg1', serverType: DEFAULTS.serverType });
      expect(provisioningJob).to.include({ agentId: agent.id, instanceId: instance.id, status: 'queued' });
      expect(operation).to.include({ type: 'provision', status: 'queued', agentId: agent.id, provisioningJobId: provisioningJob.id });
      expect(job).to.deep.equal({ queue: 'provision', id: `op-${operation.id}` });
      expect(links).to.deep.equal({
        self: `/v1/agents/${agent.id}`,
        operation: `/v1/operations/${operation.id}`,
        events: `/v1/agents/${agent.id}/events`,
      });

      const row = await h.ds.getRepository(Operation).findOneByOrFail({ id: operation.id });
      expect(row.queueJobId).to.equal(`op-${operation.id}`);
      const queued = await h.queues.provision.getJob(`op-${operation.id}`);
      expect(queued, 'provision job in Redis').to.not.equal(undefined);
      expect(queued!.data).to.deep.equal({
        operationId: operation.id,
        agentId: agent.id,
        instanceId: instance.id,
        provisioningJobId: provisioningJob.id,
        requestedBy: 'bootstrap',
      });
      expect(queued!.opts.attempts).to.equal(3);

      const events = await h.ds.getRepository(Event).findBy({ agentId: agent.id });
      expect(events.map((e) => `${e.entityType}:${e.toStatus}`).sort()).to.deep.equal([
        'agent:draft',
        'instance:pending',
        'operation:queued',
        'provisioning_job:queued',
      ]);
    });

    it('lists every invalid field at once and changes nothing', async () => {
      const before = await counts();
      const res = await h.api.request('POST', '/v1/agents', {
        body: { name: 'Not_A_Label', location: 'FSN 1', serverType: 7, extra: true },
      });
      expectProblem(res, 400, 'validation-error');
      const paths = (res.body.errors as { path: string }[]).map((e) => e.path).sort();
      expect(paths).to.deep.equal(['body', 'body.location', 'body.name', 'body.serverType']);
      expect(res.body.errors.find((e: any) => e.path === 'body').message).to.contain('extra');

      const tooLong = await h.api.request('POST', '/v1/agents', { body: { name: 'a'.repeat(64) } });
      expectProblem(tooLong, 400, 'validation-error');
      const empty = await h.api.request('POST', '/v1/agents', { body: { name: '' } });
      expectProblem(empty, 400, 'validation-error');
      const noBody = await h.api.request('POST', '/v1/agents');
      expectProblem(noBody, 400, 'validation-error');
      const array = await h.api.request('POST', '/v1/agents', { body: [{ name: 'x' }] });
      expectProblem(array, 400, 'validation-error');
      expect(await counts()).to.deep.equal(before);
    });

    it('answers malformed JSON 400, a wrong content type 415 and a huge body 413', async () => {
      const before = await counts();
      const bad = await h.api.request('POST', '/v1/agents', { raw: '{"name": "x",', headers: { 'content-type': 'application/json' } });
      expectProblem(bad, 400, 'invalid-json');
      expect(bad.text).not.to.contain('Unexpected');

      const text = await h.api.request('POST', '/v1/agents', { raw: 'name=x', headers: { 'content-type': 'text/plain' } });
      expectProblem(text, 415, 'unsupported-media-type');

      const form = await h.api.request('POST', '/v1/agents', {
        raw: 'name=x',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expectProblem(form, 415, 'unsupported-media-type');

      const huge = await h.api.request('POST', '/v1/agents', { body: { name: 'big', pad: 'x'.repeat(70_000) } });
      expectProblem(huge, 413, 'payload-too-large');
      expect(await counts()).to.deep.equal(before);
    });

    it('returns the same agent for a repeated Idempotency-Key and 422 when the body differs', async () => {
      const first = await h.api.request('POST', '/v1/agents', { body: { name: 'idem-create' }, headers: { 'idempotency-key': 'create-1' } });
      expect(first.status).to.equal(201);
      const second = await h.api.request('POST', '/v1/agents', { body: { name: 'idem-create' }, headers: { 'idempotency-key': 'create-1' } });
      expect(second.status).to.equal(200);
      expect(second.body.agent.id).to.equal(first.body.agent.id);
      expect(second.body.operation.id).to.equal(first.body.operation.id);
      expect(second.body.operation.idempotencyKey).to.equal('create-1');
      expect(await h.ds.getRepository(Agent).countBy({ name: 'idem-create' })).to.equal(1);

      const other = await h.api.request('POST', '/v1/agents', { body: { name: 'idem-other' }, headers: { 'idempotency-key': 'create-1' } });
      expectProblem(other, 422, 'idempotency-key-reused');
      expect(await h.ds.getRepository(Agent).countBy({ name: 'idem-other' })).to.equal(0);

      const badKey = await h.api.request('POST', '/v1/agents', { body: { name: 'idem-bad' }, headers: { 'idempotency-key': 'has space' } });
      expectProblem(badKey, 400, 'validation-error');
      expect(badKey.body.errors[0].path).to.equal('headers.idempotency-key');
    });
  });

  describe('who asked', () => {
    it('records the token that asked on the operation, its events, and the queue job', async () => {
      const issued = await h.api.request('POST', '/v1/tokens', { body: { name: 'ci-bot', scope: 'operate' } });
      expect(issued.status, issued.text).to.equal(201);
      const created = await h.api.request('POST', '/v1/agents', { token: issued.body.token, body: { name: 'asked-by-ci' } });
      expect(created.status, created.text).to.equal(201);
      // The name and the token's id: a later token of the same name is another actor.
      const actor = `token:ci-bot#${issued.body.id}`;
      const op = await h.api.request('GET', `/v1/operations/${created.body.operation.id}`);
      expect(op.body.operation.requestedBy).to.equal(actor);
      const events = await h.api.request('GET', `/v1/agents/${created.body.agent.id}/events`);
      expect(events.body.items.map((e: { actor: string }) => e.actor)).to.deep.equal(events.body.items.map(() => actor));
      expect(events.body.items.length).to.be.greaterThan(2);
      const job = await h.queues.provision.getJob(`op-${created.body.operation.id}`);
      expect(job!.data.requestedBy).to.equal(actor);
    });
  });

  describe('reads', () => {
    it('pages agents by cursor and by offset, and filters by status', async () => {
      const names = ['page-a', 'page-b', 'page-c'];
      const ids: string[] = [];
      for (const name of names) ids.push((await createAgent(name)).agent.id);
      await markRunning(h.ds, ids[1]!);

      const all: string[] = [];
      let cursor: string | null = null;
      do {
        const res = await h.api.request('GET', `/v1/agents?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
        expect(res.status, res.text).to.equal(200);
        expect(res.body.items.length).to.be.at.most(2);
        all.push(...res.body.items.map((a: any) => a.id));
        cursor = res.body.nextCursor;
      } while (cursor);
      expect(new Set(all).size, 'no agent twice').to.equal(all.length);
      expect(all.length).to.equal(await h.ds.getRepository(Agent).count());
      // Newest first.
      expect(all.indexOf(ids[2]!)).to.be.lessThan(all.indexOf(ids[0]!));

      const byOffset = await h.api.request('GET', '/v1/agents?limit=1&offset=1');
      expect(byOffset.body.items.map((a: any) => a.id)).to.deep.equal([all[1]]);
      expect(byOffset.body.offset).to.equal(1);

      const active = await h.api.request('GET', '/v1/agents?status=active');
      expect(active.body.items.map((a: any) => a.id)).to.deep.equal([ids[1]]);
      expect(active.body.items[0].instance).to.include({ status: 'running', serverId: '4242' });

      const both = await h.api.request('GET', '/v1/agents?cursor=abc&offset=1');
      expectProblem(both, 400, 'validation-error');
      const badStatus = await h.api.request('GET', '/v1/agents?status=sleeping&limit=0');
      expectProblem(badStatus, 400, 'validation-error');
      expect(badStatus.body.errors.map((e: any) => e.path).sort()).to.deep.equal(['query.limit', 'query.status.0']);
      const badCursor = await h.api.request('GET', '/v1/agents?cursor=bm90LWEtdXVpZA');
      expectProblem(badCursor, 400, 'validation-error');
      expect(badCursor.body.errors[0].path).to.equal('query.cursor');
    });

    it('shows an agent with its instance and pending operation, and its events', async () => {
      const created = await createAgent('detail-box');
      const res = await h.api.request('GET', `/v1/agents/${created.agent.id}`);
      expect(res.status).to.equal(200);
      expect(res.body.agent).to.include({ id: created.agent.id, name: 'detail-box' });
      expect(res.body.instance).to.include({ status: 'pending' });
      expect(res.body.operation).to.include({ id: created.operation.id, type: 'provision', status: 'queued' });
      expect(res.body.links.operation).to.equal(`/v1/operations/${created.operation.id}`);

      const events = await h.api.request('GET', `/v1/agents/${created.agent.id}/events?limit=3`);
      expect(events.status).to.equal(200);
      expect(events.body.items).to.have.length(3);
      expect(events.body.items[0]).to.include({ entityType: 'agent', fromStatus: null, toStatus: 'draft' });
      const rest = await h.api.request('GET', `/v1/agents/${created.agent.id}/events?cursor=${events.body.nextCursor}`);
      expect(rest.body.items).to.have.length(1);
      expect(rest.body.nextCursor).to.equal(null);
    });

    it('shows an operation with the queue job BullMQ still holds', async () => {
      const created = await createAgent('op-box');
      const res = await h.api.request('GET', `/v1/operations/${created.operation.id}`);
      expect(res.status).to.equal(200);
      expect(res.body.operation).to.include({ id: created.operation.id, status: 'queued', attempts: 0, progress: 0, error: null });
      expect(res.body.job).to.include({ queue: 'provision', id: `op-${created.operation.id}`, state: 'waiting', attemptsMade: 0 });

      await h.queues.provision.remove(`op-${created.operation.id}`);
      const gone = await h.api.request('GET', `/v1/operations/${created.operation.id}`);
      expect(gone.body.job).to.include({ state: 'not_retained' });
      expect(gone.body.operation.status).to.equal('queued');
    });

    it('answers 400 for a malformed id and 404 for an unknown one', async () => {
      for (const path of ['/v1/agents/not-a-uuid', '/v1/agents/123/events', '/v1/operations/zzz']) {
        const res = await h.api.request('GET', path);
        expectProblem(res, 400, 'validation-error');
        expect(res.body.errors[0].path).to.equal('params.id');
      }
      const agent = await h.api.request('GET', `/v1/agents/${UNKNOWN_ID}`);
      expectProblem(agent, 404, 'not-found');
      expect(agent.body.detail).to.equal(`Agent ${UNKNOWN_ID} not found`);
      expectProblem(await h.api.request('GET', `/v1/agents/${UNKNOWN_ID}/events`), 404, 'not-found');
      expectProblem(await h.api.request('GET', `/v1/operations/${UNKNOWN_ID}`), 404, 'not-found');
    });

    it('answers 404 for an unknown route and 405 for a wrong method', async () => {
      expectProblem(await h.api.request('GET', '/v1/nothing-here'), 404, 'route-not-found');
      expectProblem(await h.api.request('GET', '/nothing-here', { token: null }), 404, 'route-not-found');
      const wrong = await h.api.request('DELETE', '/v1/agents');
      expectProblem(wrong, 405, 'method-not-allowed');
      expect(wrong.headers.get('allow')).to.equal('POST, GET, HEAD');
      const getStop = await h.api.request('GET', `/v1/agents/${UNKNOWN_ID}/stop`);
      expectProblem(getStop, 405, 'method-not-allowed');
      expect(getStop.headers.get('allow')).to.equal('POST');
    });
  });

  describe('commands', () => {
    it('queues a stop of a running agent with a deterministic job id and ids-only data', async () => {
      const { agent } = await createAgent('stop-box');
      await markRunning(h.ds, agent.id);
      const res = await h.api.request('POST', `/v1/agents/${agent.id}/stop`);
      expect(res.status, res.text).to.equal(202);
      const { operation, job, links } = res.body;
      expect(operation).to.include({ type: 'stop', status: 'queued', agentId: agent.id });
      expect(job).to.deep.equal({ queue: 'stop', id: `op-${operation.id}` });
      expect(links).to.deep.equal({ operation: `/v1/operations/${operation.id}`, agent: `/v1/agents/${agent.id}` });
      const queued = await h.queues.stop.getJob(`op-${operation.id}`);
      expect(queued!.data).to.deep.equal({ operationId: operation.id, agentId: agent.id, requestedBy: 'bootstrap' });

      // A second stop while the first is pending is a conflict, not a second job.
      const again = await h.api.request('POST', `/v1/agents/${agent.id}/stop`);
      expectProblem(again, 409, 'state-conflict');
      expect(again.body.detail).to.contain(operation.id);
      expect(await h.ds.getRepository(Operation).countBy({ agentId: agent.id, type: 'stop' })).to.equal(1);

      const detail = await h.api.request('GET', `/v1/agents/${agent.id}`);
      expect(detail.body.operation.id).to.equal(operation.id);
    });

    it('answers 409 with the lifecycle messages when the state does not allow the command, changing nothing', async () => {
      const { agent } = await createAgent('pending-box');
      const before = await counts();
      const stop = await h.api.request('POST', `/v1/agents/${agent.id}/stop`);
      expectProblem(stop, 409, 'state-conflict');
      expect(stop.body.detail).to.equal('No running instance to stop');
      const start = await h.api.request('POST', `/v1/agents/${agent.id}/start`);
      expectProblem(start, 409, 'state-conflict');
      expect(start.body.detail).to.equal('No stopped instance to start');
      expect(await counts()).to.deep.equal(before);
    });

    it('refuses commands on a destroyed agent and a second destroy while one is pending', async () => {
      const { agent } = await createAgent('doomed-box');
      const destroy = await h.api.request('POST', `/v1/agents/${agent.id}/destroy`);
      expect(destroy.status).to.equal(202);
      expect(await jobIdsIn(h.queues.destroy)).to.include(`op-${destroy.body.operation.id}`);
      const again = await h.api.request('POST', `/v1/agents/${agent.id}/destroy`);
      expectProblem(again, 409, 'state-conflict');

      await h.ds.getRepository(Agent).update({ id: agent.id }, { status: 'destroyed' });
      await h.ds.getRepository(Operation).update({ id: destroy.body.operation.id }, { status: 'succeeded' });
      for (const verb of ['stop', 'start', 'destroy']) {
        const res = await h.api.request('POST', `/v1/agents/${agent.id}/${verb}`);
        expectProblem(res, 409, 'state-conflict');
        expect(res.body.detail).to.equal(`Agent ${agent.id} is already destroyed`);
      }
    });

    it('answers 404 for a command on an unknown agent and 400 for a malformed id', async () => {
      const before = await counts();
      const unknown = await h.api.request('POST', `/v1/agents/${UNKNOWN_ID}/stop`);
      expectProblem(unknown, 404, 'not-found');
      const malformed = await h.api.request('POST', '/v1/agents/12345/destroy');
      expectProblem(malformed, 400, 'validation-error');
      const badJson = await h.api.request('POST', `/v1/agents/${UNKNOWN_ID}/stop`, {
        raw: '{',
        headers: { 'content-type': 'application/json' },
      });
      expectProblem(badJson, 400, 'invalid-json');
      expect(await counts()).to.deep.equal(before);
    });

    it('turns a repeated Idempotency-Key into one operation and one job; reuse elsewhere is 422', async () => {
      const { agent } = await createAgent('idem-stop');
      await markRunning(h.ds, agent.id);
      const headers = { 'idempotency-key': 'stop-once' };
      const first = await h.api.request('POST', `/v1/agents/${agent.id}/stop`, { headers });
      const second = await h.api.request('POST', `/v1/agents/${agent.id}/stop`, { headers });
      expect(first.status).to.equal(202);
      expect(second.status).to.equal(200);
      expect(second.body.operation.id).to.equal(first.body.operation.id);
      expect(await h.ds.getRepository(Operation).countBy({ agentId: agent.id, type: 'stop' })).to.equal(1);
      const stopJobs = (await jobIdsIn(h.queues.stop)).filter((id) => id === `op-${first.body.operation.id}`);
      expect(stopJobs).to.have.length(1);

      const otherVerb = await h.api.request('POST', `/v1/agents/${agent.id}/destroy`, { headers });
      expectProblem(otherVerb, 422, 'idempotency-key-reused');
      const { agent: other } = await createAgent('idem-stop-2');
      const otherAgent = await h.api.request('POST', `/v1/agents/${other.id}/stop`, { headers });
      expectProblem(otherAgent, 422, 'idempotency-key-reused');
      expect(await h.ds.getRepository(Operation).countBy({ agentId: agent.id, type: 'destroy' })).to.equal(0);
    });

    it('keeps concurrent requests with one Idempotency-Key to one operation', async () => {
      const { agent } = await createAgent('idem-race');
      const headers = { 'idempotency-key': 'race-destroy' };
      const results = await Promise.all(
        Array.from({ length: 5 }, () => h.api.request('POST', `/v1/agents/${agent.id}/destroy`, { headers })),
      );
      expect(results.map((r) => r.status).sort()).to.deep.equal([200, 200, 200, 200, 202]);
      expect(new Set(results.map((r) => r.body.operation.id)).size).to.equal(1);
      expect(await h.ds.getRepository(Operation).countBy({ agentId: agent.id, type: 'destroy' })).to.equal(1);
    });

    it('lets exactly one of many simultaneous stops of an agent through, without an Idempotency-Key', async () => {
      for (let round = 0; round < 3; round++) {
        const { agent } = await createAgent(`stop-race-${round}`);
        await markRunning(h.ds, agent.id);
        const results = await Promise.all(Array.from({ length: 8 }, () => h.api.request('POST', `/v1/agents/${agent.id}/stop`)));
        expect(results.map((r) => r.status).sort(), `round ${round}`).to.deep.equal([202, 409, 409, 409, 409, 409, 409, 409]);
        expect(await h.ds.getRepository(Operation).countBy({ agentId: agent.id, type: 'stop' })).to.equal(1);
      }
    });
  });

  describe('POST /v1/provisioning-jobs/:id/rollback', () => {
    async function failedProvision(name: string) {
      const created = await createAgent(name);
      const pj = created.provisioningJob.id;
      await transition(h.ds, { entity: 'provisioning_job', id: pj, from: ['queued'], to: 'running', reason: 'test' });
      await transition(h.ds, { entity: 'provisioning_job', id: pj, from: ['running'], to: 'failed', reason: 'test' });
      return created;
    }

    it('queues exactly one rollback per provisioning job however often it is asked', async () => {
      const { provisioningJob } = await failedProvision('rollback-box');
      const first = await h.api.request('POST', `/v1/provisioning-jobs/${provisioningJob.id}/rollback`);
      expect(first.status, first.text).to.equal(202);
      expect(first.body.job).to.deep.equal({ queue: 'rollback', id: `rollback-${provisioningJob.id}` });
      const second = await h.api.request('POST', `/v1/provisioning-jobs/${provisioningJob.id}/rollback`);
      expect(second.status).to.equal(200);
      expect(second.body.operation.id).to.equal(first.body.operation.id);

      // The listener and the sweep ask through the service, possibly at the same moment.
      const fromWorkers = await Promise.all([
        h.operations.requestRollback(provisioningJob.id, { trigger: 'auto' }),
        h.operations.requestRollback(provisioningJob.id, { trigger: 'sweep' }),
      ]);
      expect(fromWorkers.map((r) => r.created)).to.deep.equal([false, false]);
      expect(fromWorkers.map((r) => r.operation.id)).to.deep.equal([first.body.operation.id, first.body.operation.id]);

      const rows = await h.ds.getRepository(Operation).findBy({ provisioningJobId: provisioningJob.id, type: 'rollback' });
      expect(rows).to.have.length(1);
      expect(rows[0]!.idempotencyKey).to.equal(`rollback:${provisioningJob.id}`);
      const job = await h.queues.rollback.getJob(`rollback-${provisioningJob.id}`);
      expect(job!.data).to.deep.equal({ operationId: rows[0]!.id, provisioningJobId: provisioningJob.id, requestedBy: 'bootstrap' });
      expect((await jobIdsIn(h.queues.rollback)).filter((id) => id.endsWith(provisioningJob.id))).to.have.length(1);
    });

    it('creates one rollback when the listener and the sweep race', async () => {
      const { provisioningJob } = await failedProvision('rollback-race');
      const results = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          h.operations.requestRollback(provisioningJob.id, { trigger: i % 2 ? 'auto' : 'sweep' }),
        ),
      );
      expect(results.filter((r) => r.created)).to.have.length(1);
      expect(new Set(results.map((r) => r.operation.id)).size).to.equal(1);
    });

    it('refuses a provision that has not failed, and an unknown job', async () => {
      const { provisioningJob } = await createAgent('rollback-too-early');
      const early = await h.api.request('POST', `/v1/provisioning-jobs/${provisioningJob.id}/rollback`);
      expectProblem(early, 409, 'state-conflict');
      expect(await h.ds.getRepository(Operation).countBy({ provisioningJobId: provisioningJob.id, type: 'rollback' })).to.equal(0);

      const unknown = await h.api.request('POST', `/v1/provisioning-jobs/${UNKNOWN_ID}/rollback`);
      expectProblem(unknown, 404, 'not-found');
      expect(unknown.body.detail).to.equal(`Job ${UNKNOWN_ID} not found`);
      expect(await h.ds.getRepository(ProvisioningJob).countBy({ id: UNKNOWN_ID })).to.equal(0);
    });
  });

  describe('Bull Board', () => {
    it('asks for credentials and lists every queue with them', async () => {
      const anonymous = await h.api.request('GET', '/admin/queues/api/queues', { token: null });
      expect(anonymous.status).to.equal(401);
      expect(anonymous.headers.get('www-authenticate')).to.match(/^Basic realm="tailfleet"/);
      const wrong = await h.api.request('GET', '/admin/queues', {
        token: null,
        headers: { authorization: `Basic ${Buffer.from(`${BOARD.user}:nope`).toString('base64')}` },
      });
      expect(wrong.status).to.equal(401);

      const auth = { authorization: `Basic ${Buffer.from(`${BOARD.user}:${BOARD.password}`).toString('base64')}` };
      const res = await h.api.request('GET', '/admin/queues/api/queues', { token: null, headers: auth });
      expect(res.status, res.text.slice(0, 300)).to.equal(200);
      const names = (res.body.queues as { name: string }[]).map((q) => q.name).sort();
      // One queue per operation type of the registry, and the webhooks'.
      expect(names).to.deep.equal([...QUEUE_NAMES].sort());
      expect(names).to.include.members(['claim', 'destroy', 'hibernate', 'provision', 'reconcile', 'rollback', 'start', 'stop', 'wake', 'webhooks']);

      const page = await h.api.request('GET', '/admin/queues', { token: null, headers: auth });
      expect(page.status).to.equal(200);
      expect(page.headers.get('content-type')).to.match(/text\/html/);
    });
  });

  describe('GET /metrics', () => {
    it('exposes request counts by route template and job counts per queue and state', async () => {
      const { agent } = await createAgent('metrics-box');
      await h.api.request('GET', `/v1/agents/${agent.id}`);
      const res = await h.api.request('GET', '/metrics', { token: null });
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.match(/^text\/plain/);
      expect(res.text).to.contain('tailfleet_http_requests_total{method="GET",route="/v1/agents/:id",status="200"}');
      expect(res.text).to.contain('tailfleet_http_requests_total{method="POST",route="/v1/agents",status="201"}');
      expect(res.text).not.to.contain(`route="/v1/agents/${agent.id}"`);
      expect(res.text).to.contain('tailfleet_cloud_requests_total');
      const waiting = /tailfleet_queue_jobs\{queue="provision",state="waiting"\} (\d+)/.exec(res.text);
      expect(waiting, 'provision waiting gauge').to.not.equal(null);
      expect(Number(waiting![1])).to.equal((await h.queues.provision.getJobCounts('waiting')).waiting);
      for (const queue of Object.keys(h.queues)) expect(res.text).to.contain(`tailfleet_queue_jobs{queue="${queue}",state="failed"}`);
    });
  });

  describe('GET /v1/openapi.json', () => {
    const ROUTES = [
      'POST /v1/agents',
      'GET /v1/agents',
      'GET /v1/agents/{id}',
      'GET /v1/agents/{id}/events',
      'POST /v1/agents/{id}/stop',
      'POST /v1/agents/{id}/start',
      'POST /v1/agents/{id}/destroy',
      'POST /v1/agents/{id}/hibernate',
      'POST /v1/agents/{id}/wake',
      'POST /v1/agents/{id}/reprovision',
      'POST /v1/operations/{id}/cancel',
      'POST /v1/provisioning-jobs/{id}/rollback',
      'GET /v1/operations/{id}',
      'GET /v1/operations',
      'POST /v1/tokens',
      'GET /v1/tokens',
      'DELETE /v1/tokens/{id}',
      'GET /v1/openapi.json',
      'GET /healthz',
      'GET /readyz',
      'GET /metrics',
      'GET /admin/queues',
      'GET /v1/events/stream',
      'POST /v1/webhooks',
      'GET /v1/webhooks',
      'GET /v1/webhooks/{id}',
      'DELETE /v1/webhooks/{id}',
      'GET /v1/webhooks/{id}/deliveries',
      'GET /v1/findings',
      'POST /v1/findings/{id}/resolve',
      'POST /v1/agents/{id}/heartbeat',
      'POST /v1/agents/{id}/bootstrap',
      'POST /v1/agents/{id}/leases',
      'GET /v1/agents/{id}/leases',
      'POST /v1/agents/{id}/leases/{leaseId}/renew',
      'DELETE /v1/agents/{id}/leases/{leaseId}',
      'POST /v1/agents/{id}/extend',
      'POST /v1/pools',
      'GET /v1/pools',
      'GET /v1/pools/{name}',
      'PATCH /v1/pools/{name}',
      'DELETE /v1/pools/{name}',
      'POST /v1/pools/{name}/claim',
    ];

    it('documents every route, and every documented route exists', async () => {
      const res = await h.api.request('GET', '/v1/openapi.json', { token: null });
      expect(res.status).to.equal(200);
      expect(res.body.openapi).to.match(/^3\.1\./);
      const documented: string[] = [];
      for (const [path, item] of Object.entries(res.body.paths as Record<string, Record<string, unknown>>)) {
        for (const method of Object.keys(item)) documented.push(`${method.toUpperCase()} ${path}`);
      }
      // Every agent command of the registry has its route (a new type is listed by its own test).
      const commands = AGENT_COMMAND_TYPES.map((type) => `POST /v1/agents/{id}/${type}`);
      expect(documented.sort()).to.deep.equal([...new Set([...ROUTES, ...commands])].sort());

      for (const route of documented) {
        const [method, path] = route.split(' ') as [string, string];
        const probe = await h.api.request(method, path.replace('{id}', UNKNOWN_ID), { token: API_TOKEN });
        expect(probe.body?.type, route).not.to.equal('urn:tailfleet:problem:route-not-found');
        expect(probe.status, route).not.to.equal(405);
      }

    });

    it('is what answers are checked against: a body or status the document does not allow is reported', () => {
      const contract = new ContractValidator(buildOpenApiDocument() as never);
      const operationPath = `/v1/operations/${UNKNOWN_ID}`;
      expect(contract.templateOf(`${operationPath}?x=1`)).to.equal('/v1/operations/{id}');
      const wrong = contract.check('GET', operationPath, {
        status: 200,
        contentType: 'application/json',
        body: { operation: { id: 'not-a-uuid', status: 'sleeping' }, job: null, links: {} },
      });
      expect(wrong.join('\n')).to.contain('operation.id').and.to.contain('operation.status').and.to.contain('operation.requestedAt');
      expect(contract.check('GET', '/v1/agents', { status: 418, contentType: 'application/json', body: {} })).to.deep.equal([
        'GET /v1/agents → 418: the status is not documented',
      ]);
      expect(contract.check('GET', '/v1/agents', { status: 400, contentType: 'text/html', body: '<p>' })[0]).to.contain('content type text/html');
      // Routes the document does not describe are judged elsewhere (route-not-found, 405).
      expect(contract.check('PATCH', '/v1/agents', { status: 405, contentType: 'application/problem+json', body: {} })).to.deep.equal([]);
    });

    it('resolves every schema reference, with and without the reconcile and cost routes', () => {
      for (const doc of [buildOpenApiDocument(), buildOpenApiDocument({ reconcile: true }), buildOpenApiDocument({ cost: true })]) {
        const refs = JSON.stringify(doc).match(/#\/components\/schemas\/\w+/g) ?? [];
        expect(refs.length).to.be.greaterThan(10);
        for (const r of new Set(refs)) expect(doc.components.schemas, r).to.have.property(r.split('/').pop()!);
      }
      expect(Object.keys(buildOpenApiDocument({ reconcile: true }).paths['/v1/reconcile' as never] ?? {})).to.deep.equal(['get', 'post']);
      expect(buildOpenApiDocument().paths).not.to.have.property('/v1/reconcile');
      expect(Object.keys(buildOpenApiDocument({ cost: true }).paths['/v1/fleet/cost' as never] ?? {})).to.deep.equal(['get']);
      expect(buildOpenApiDocument().paths).not.to.have.property('/v1/fleet/cost');
    });
  });
});
