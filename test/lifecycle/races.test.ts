import { expect } from 'chai';
import { StateConflictError } from '../../src/errors';
import {
  cloud,
  newOperation,
  newAgent,
  provisionedAgent,
  rows,
  settle,
  startLifecycleHarness,
  transitionsOf,
  withQueueRetries,
  type AgentFixture,
  type LifecycleHarness,
} from '../helpers/lifecycle';
import { waitFor } from '../helpers/wait';

const ROUNDS = 50;
const PARALLEL = 25;

// The instance histories a stop racing a destroy may leave; anything else means both won a step.
const STOP_FIRST = ['running→stopping', 'stopping→stopped', 'stopped→destroying', 'destroying→destroyed'];
const DESTROY_FIRST = ['running→destroying', 'destroying→destroyed'];
const DESTROY_TOOK_OVER = ['running→stopping', 'stopping→destroying', 'destroying→destroyed'];

describe('lifecycle: races', function () {
  this.timeout(60_000);
  let h: LifecycleHarness;

  before(async () => {
    h = await startLifecycleHarness('lc_races');
  });
  after(async () => {
    await h?.close();
  });

  it(`stop and destroy on one agent at once, ${ROUNDS} rounds: one wins, the other conflicts or continues`, async () => {
    const outcomes = { stopFirst: 0, destroyFirst: 0, destroyTookOver: 0 };

    async function round(i: number, a: AgentFixture): Promise<void> {
      const [stopOp, destroyOp] = [await newOperation(h, 'stop', a.agentId), await newOperation(h, 'destroy', a.agentId)];
      // Who goes first is chosen by what the other has done, not by a clock, so every interleaving
      // shows up on any machine: at the same moment, destroy once stop is under way, stop once
      // destroy is under way, destroy once stop is done.
      const reached = (statuses: string[]) => () =>
        waitFor(`instance ${a.instanceId} in ${statuses.join('/')}`, async () => statuses.includes((await rows(h, a)).instance.status), { timeoutMs: 20_000 });
      const mode = i % 4;
      const stopAfter = mode === 2 ? reached(['destroying', 'destroyed']) : async () => undefined;
      const destroyAfter = mode === 1 ? reached(['stopping', 'stopped']) : mode === 3 ? reached(['stopped']) : async () => undefined;
      const stop = settle(stopAfter().then(() => h.power.stop(a.agentId, { operationId: stopOp })));
      // The destroy job is retried like the queue does: the server is locked while the shutdown action runs.
      const destroy = settle(
        destroyAfter().then(() => withQueueRetries(() => h.teardown.destroy(a.agentId, { operationId: destroyOp }))),
      );
      const [stopErr, destroyErr] = await Promise.all([stop, destroy]);

      expect(destroyErr, `round ${i}: destroy`).to.equal(null);
      if (stopErr) expect(stopErr, `round ${i}: stop failed with ${stopErr.message}`).to.be.instanceOf(StateConflictError);

      const history = (await transitionsOf(h, a.instanceId)).slice(3); // after ∅→pending→provisioning→running
      if (stopErr === null) {
        expect(history, `round ${i}`).to.deep.equal(STOP_FIRST);
        outcomes.stopFirst++;
      } else if (history.length === DESTROY_FIRST.length) {
        expect(history, `round ${i}`).to.deep.equal(DESTROY_FIRST);
        outcomes.destroyFirst++;
      } else {
        expect(history, `round ${i}`).to.deep.equal(DESTROY_TOOK_OVER);
        outcomes.destroyTookOver++;
      }

      const { agent, instance } = await rows(h, a);
      expect(instance.status).to.equal('destroyed');
      expect(agent.status).to.equal('destroyed');
    }

    for (let start = 0; start < ROUNDS; start += PARALLEL) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(PARALLEL, ROUNDS - start) }, (_, k) => provisionedAgent(h, `race-${start + k}`)),
      );
      await Promise.all(batch.map((a, k) => round(start + k, a)));
    }

    // The simulator agrees with the database: nothing of any of the agents is left.
    const { servers, devices } = cloud(h);
    expect(servers.filter((s) => s.status !== 'deleting' && s.labels['managed-by'] === 'tailfleet')).to.have.length(0);
    expect(devices).to.have.length(0);
    expect(outcomes.stopFirst + outcomes.destroyFirst + outcomes.destroyTookOver).to.equal(ROUNDS);
    // More than one interleaving was exercised (otherwise the race was not a race).
    expect(Object.values(outcomes).filter((n) => n > 0).length, JSON.stringify(outcomes)).to.be.greaterThan(1);
  });

  it('two attempts of one provisioning job at once, 20 rounds: one server each, at most one winner', async () => {
    await h.reset();
    const agents = await Promise.all(Array.from({ length: 20 }, (_, k) => newAgent(h, `twice-${k}`)));
    await Promise.all(
      agents.map(async (a, i) => {
        const attempt = () => h.provision.provision({ provisioningJobId: a.provisioningJobId });
        const errors = await Promise.all([settle(attempt()), settle(delay((i % 10) * 8).then(attempt))]);
        for (const err of errors) if (err) expect(err, err.message).to.be.instanceOf(StateConflictError);
        expect(errors.filter((e) => e === null).length, `agent ${i}`).to.be.greaterThan(0);

        const { agent, instance, job } = await rows(h, a);
        expect([agent.status, instance.status, job!.status]).to.deep.equal(['active', 'running', 'succeeded']);
        const live = cloud(h).servers.filter((s) => s.labels['tailfleet-agent'] === a.agentId && s.status !== 'deleting');
        expect(live.map((s) => String(s.id)), `agent ${i}`).to.deep.equal([instance.serverId]);
      }),
    );
    // Every device in the tailnet belongs to a recorded instance: a discarded server never joined.
    const recorded = new Set((await h.ds.query('SELECT tailscale_device_id AS id FROM instances')).map((r: { id: string }) => r.id));
    expect(cloud(h).devices.map((d) => d.id).filter((id) => !recorded.has(id))).to.deep.equal([]);
  });
});

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
