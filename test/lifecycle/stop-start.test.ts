import { expect } from 'chai';
import { CloudApiError } from '../../src/clients/errors';
import { transition, type TransitionRequest } from '../../src/db/transitions';
import { NotFoundError, StateConflictError } from '../../src/errors';
import {
  cloud,
  expectRejection,
  newAgent,
  newOperation,
  provisionedAgent,
  rows,
  useLifecycleHarness,
  transitionsOf,
  type AgentFixture,
} from '../helpers/lifecycle';
import { ledgerFor } from '../helpers/ledger';

const SHUTDOWN = '/hetzner/v1/servers/{id}/actions/shutdown';
const POWERON = '/hetzner/v1/servers/{id}/actions/poweron';

describe('lifecycle: stop and start', function () {
  const h = useLifecycleHarness('lc_stop_start');

  const serverOf = (a: AgentFixture) => cloud(h).servers.find((s) => s.labels['tailfleet-agent'] === a.agentId)!;
  const requests = (key: string) => h.sim.control.requestCounts()[`POST ${key}`] ?? 0;

  async function stoppedAgent(): Promise<AgentFixture> {
    const a = await provisionedAgent(h);
    await h.power.stop(a.agentId);
    return a;
  }

  describe('stop', () => {
    it('shuts the server down gracefully, then records stopped and pauses the agent', async () => {
      const a = await provisionedAgent(h);
      const op = await newOperation(h, 'stop', a.agentId);
      await h.power.stop(a.agentId, { operationId: op });

      const { agent, instance } = await rows(h, a);
      expect(instance.status).to.equal('stopped');
      expect(instance.stoppedAt).to.be.instanceOf(Date);
      expect(instance.error).to.equal(null);
      expect(agent.status).to.equal('paused');
      expect(serverOf(a).status).to.equal('off');
      expect(requests(SHUTDOWN)).to.equal(1);
      expect(requests('/hetzner/v1/servers/{id}/actions/poweroff')).to.equal(0);
      expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['running→stopping', 'stopping→stopped']);
      expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('active→paused');
    });

    it('powers the server off when it ignores the ACPI signal past the timeout', async () => {
      const a = await provisionedAgent(h);
      h.sim.control.updateServer(serverOf(a).id, { ignoresAcpi: true });
      await h.power.stop(a.agentId);
      expect((await rows(h, a)).instance.status).to.equal('stopped');
      expect(serverOf(a).status).to.equal('off');
      expect(requests('/hetzner/v1/servers/{id}/actions/poweroff')).to.equal(1);
    });

    it('refuses an instance that is not running, and an unknown agent', async () => {
      const a = await stoppedAgent();
      const err = await expectRejection(h.power.stop(a.agentId, { operationId: await newOperation(h, 'stop', a.agentId) }));
      expect(err).to.be.instanceOf(StateConflictError);
      expect(err.message).to.equal('No running instance to stop');

      const pending = await newAgent(h, 'pending-one');
      expect((await expectRejection(h.power.stop(pending.agentId))).message).to.equal('No running instance to stop');

      const missing = await expectRejection(h.power.stop('00000000-0000-4000-8000-000000000000'));
      expect(missing).to.be.instanceOf(NotFoundError);
    });

    for (const fault of [
      { name: 'a 500 beyond the client retries', rule: { status: 500, times: 10 } },
      { name: 'a 422', rule: { status: 422, code: 'invalid_input', times: 1 } },
    ]) {
      it(`puts the instance back to running with the error kept when the shutdown fails with ${fault.name}`, async () => {
        const a = await provisionedAgent(h);
        h.sim.control.setFaults([{ method: 'POST', route: SHUTDOWN, ...fault.rule }]);
        const err = await expectRejection(h.power.stop(a.agentId));
        expect(err).to.be.instanceOf(CloudApiError);

        const { agent, instance } = await rows(h, a);
        expect(instance.status).to.equal('running');
        expect(instance.error).to.be.a('string').with.length.greaterThan(0);
        expect(instance.stoppedAt).to.equal(null);
        expect(agent.status).to.equal('active');
        expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['running→stopping', 'stopping→running']);
        expect(serverOf(a).status).to.equal('running');

        // The job's retry, once the API is healthy again, completes the stop and clears the error.
        h.sim.control.clearFaults();
        await h.power.stop(a.agentId);
        const after = await rows(h, a);
        expect(after.instance.status).to.equal('stopped');
        expect(after.instance.error).to.equal(null);
        expect(after.agent.status).to.equal('paused');
      });
    }

    it('continues a stop that crashed in stopping with the server still running', async () => {
      const a = await provisionedAgent(h);
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'stopping', reason: 'test' });
      await h.power.stop(a.agentId);
      expect((await rows(h, a)).instance.status).to.equal('stopped');
      expect(serverOf(a).status).to.equal('off');
    });

    it('continues a stop that crashed in stopping after the server was already off', async () => {
      const a = await provisionedAgent(h);
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'stopping', reason: 'test' });
      h.sim.control.updateServer(serverOf(a).id, { status: 'off' });
      h.sim.control.resetRequestCounts();
      await h.power.stop(a.agentId);
      const { agent, instance } = await rows(h, a);
      expect(instance.status).to.equal('stopped');
      expect(agent.status).to.equal('paused');
      expect(requests(SHUTDOWN)).to.equal(0);
    });

    it('treats a redelivered stop that already finished as done, but not someone else\'s', async () => {
      const a = await provisionedAgent(h);
      const op = await newOperation(h, 'stop', a.agentId);
      await h.power.stop(a.agentId, { operationId: op });
      const before = await transitionsOf(h, a.instanceId);
      await h.power.stop(a.agentId, { operationId: op });
      expect(await transitionsOf(h, a.instanceId)).to.deep.equal(before);

      const other = await newOperation(h, 'stop', a.agentId);
      expect(await expectRejection(h.power.stop(a.agentId, { operationId: other }))).to.be.instanceOf(StateConflictError);
    });

    it('finishes both of two deliveries of one stop running at once, moving the instance once', async () => {
      const a = await provisionedAgent(h);
      const op = await newOperation(h, 'stop', a.agentId);
      // A delivery that lost its lock goes on while the next one resumes from stopping: both shut down, one records it.
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'stopping', reason: 'test', operationId: op });
      h.sim.control.setTimings({ shutdownMs: 120 });
      try {
        await Promise.all([h.power.stop(a.agentId, { operationId: op }), h.power.stop(a.agentId, { operationId: op })]);
      } finally {
        h.sim.control.setTimings({ shutdownMs: 20 });
      }
      const { agent, instance } = await rows(h, a);
      expect([instance.status, agent.status]).to.deep.equal(['stopped', 'paused']);
      expect((await transitionsOf(h, a.instanceId)).filter((t) => t === 'stopping→stopped')).to.have.length(1);
    });

    it('ends with its instance, agent, ownership audit and operation success in one transaction', async () => {
      const ledger = ledgerFor(h.ds);
      const a = await provisionedAgent(h);
      const op = await newOperation(h, 'stop', a.agentId);
      expect(await ledger.claim(op, { attempt: 1, token: 'd1' })).to.equal('claimed');
      let finished = false;
      await h.power.stop(a.agentId, {
        operationId: op,
        finish: async (moves, step, events) => {
          finished = await ledger.finish(op, moves, { step, percent: 100 }, events);
        },
      });
      expect(finished).to.equal(true);
      // xmin names the transaction that wrote a row.
      const events: Array<{ entity_id: string; to_status: string; tx: string }> = await h.ds.query(
        `SELECT entity_id, to_status, xmin::text AS tx FROM events WHERE operation_id = $1 AND to_status IN ('stopped', 'paused', 'server_powered_off', 'succeeded')`,
        [op],
      );
      expect(events.map((e) => `${e.entity_id === op ? 'operation' : e.entity_id === a.agentId ? 'agent' : 'instance'}:${e.to_status}`).sort()).to.deep.equal(
        ['agent:paused', 'instance:server_powered_off', 'instance:stopped', 'operation:succeeded'],
      );
      expect(new Set(events.map((e) => e.tx)).size).to.equal(1);
    });

    it('finishes both of two deliveries of one stop when each commits its last moves with the operation success', async () => {
      const ledger = ledgerFor(h.ds);
      const a = await provisionedAgent(h);
      const op = await newOperation(h, 'stop', a.agentId);
      expect(await ledger.claim(op, { attempt: 1, token: 'd1' })).to.equal('claimed');
      expect(await ledger.claim(op, { attempt: 2, token: 'd2' })).to.equal('taken-over');
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['running'], to: 'stopping', reason: 'test', operationId: op });
      // What the job runner does for each delivery: the workflow's finish, else the ledger's succeed.
      const delivery = async () => {
        let finished = false;
        const finish = async (moves: readonly TransitionRequest[], step: string) => {
          finished = await ledger.finish(op, moves, { step, percent: 100 });
        };
        await h.power.stop(a.agentId, { operationId: op, finish });
        if (!finished) await ledger.succeed(op, { step: 'done', percent: 100 });
        return finished;
      };
      h.sim.control.setTimings({ shutdownMs: 120 });
      let finished: boolean[];
      try {
        finished = await Promise.all([delivery(), delivery()]);
      } finally {
        h.sim.control.setTimings({ shutdownMs: 20 });
      }
      expect(finished.filter(Boolean)).to.have.length(1);
      const { agent, instance } = await rows(h, a);
      expect([instance.status, agent.status]).to.deep.equal(['stopped', 'paused']);
      expect((await transitionsOf(h, a.instanceId)).filter((t) => t === 'stopping→stopped')).to.have.length(1);
      expect(await transitionsOf(h, op)).to.deep.equal(['∅→queued', 'queued→running', 'running→succeeded']);
    });
  });

  describe('start', () => {
    it('powers the server on, records running and activates the agent', async () => {
      const a = await stoppedAgent();
      const op = await newOperation(h, 'start', a.agentId);
      await h.power.start(a.agentId, { operationId: op });

      const { agent, instance } = await rows(h, a);
      expect(instance.status).to.equal('running');
      expect(instance.stoppedAt).to.equal(null);
      expect(instance.startedAt).to.be.instanceOf(Date);
      expect(agent.status).to.equal('active');
      expect(serverOf(a).status).to.equal('running');
      expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['stopped→starting', 'starting→running']);
      expect((await transitionsOf(h, a.agentId)).slice(-2)).to.deep.equal(['active→paused', 'paused→active']);
      // Non-ephemeral key: the device survived the stop.
      expect(cloud(h).devices).to.have.length(1);
    });

    it('refuses an instance that is not stopped', async () => {
      const a = await provisionedAgent(h);
      const err = await expectRejection(h.power.start(a.agentId, { operationId: await newOperation(h, 'start', a.agentId) }));
      expect(err).to.be.instanceOf(StateConflictError);
      expect(err.message).to.equal('No stopped instance to start');
    });

    it('puts the instance back to stopped with the error kept when the power-on fails', async () => {
      const a = await stoppedAgent();
      h.sim.control.setFaults([{ method: 'POST', route: POWERON, status: 500, times: 10 }]);
      const err = await expectRejection(h.power.start(a.agentId));
      expect(err).to.be.instanceOf(CloudApiError);

      const { agent, instance } = await rows(h, a);
      expect(instance.status).to.equal('stopped');
      expect(instance.error).to.be.a('string').with.length.greaterThan(0);
      expect(agent.status).to.equal('paused');
      expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['stopped→starting', 'starting→stopped']);

      h.sim.control.clearFaults();
      await h.power.start(a.agentId);
      expect((await rows(h, a)).instance.status).to.equal('running');
    });

    it('continues a start that crashed in starting with the server still off', async () => {
      const a = await stoppedAgent();
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['stopped'], to: 'starting', reason: 'test' });
      await h.power.start(a.agentId);
      expect((await rows(h, a)).instance.status).to.equal('running');
      expect(serverOf(a).status).to.equal('running');
    });

    it('continues a start that crashed in starting after the server was already running', async () => {
      const a = await stoppedAgent();
      await transition(h.ds, { entity: 'instance', id: a.instanceId, from: ['stopped'], to: 'starting', reason: 'test' });
      h.sim.control.updateServer(serverOf(a).id, { status: 'running' });
      h.sim.control.resetRequestCounts();
      await h.power.start(a.agentId);
      const { agent, instance } = await rows(h, a);
      expect(instance.status).to.equal('running');
      expect(agent.status).to.equal('active');
      expect(requests(POWERON)).to.equal(0);
    });

    it('treats a redelivered start that already finished as done', async () => {
      const a = await stoppedAgent();
      const op = await newOperation(h, 'start', a.agentId);
      await h.power.start(a.agentId, { operationId: op });
      await h.power.start(a.agentId, { operationId: op });
      expect((await rows(h, a)).instance.status).to.equal('running');
    });
  });
});
