import { expect } from 'chai';
import sinon from 'sinon';
import { CloudApiError } from '../../src/clients/errors';
import { NotFoundError, StateConflictError } from '../../src/errors';
import {
  cloud,
  eventually,
  expectRejection,
  newAgent,
  newOperation,
  provisionedAgent,
  rows,
  useLifecycleHarness,
  transitionsOf,
  type AgentFixture,
} from '../helpers/lifecycle';

describe('lifecycle: rollback of a failed provision', function () {
  const h = useLifecycleHarness('lc_rollback');

  /** A provision whose create call made the server but lost the answer, then the worker died for good. */
  async function serverCreatedButNotRecorded(): Promise<AgentFixture> {
    const a = await newAgent(h);
    const real = h.hetzner.createServer.bind(h.hetzner);
    sinon.stub(h.hetzner, 'createServer').callsFake(async (o) => {
      await real(o);
      throw new CloudApiError({
        api: 'hetzner',
        status: 0,
        code: 'timeout',
        message: 'request timed out',
        retryable: true,
        method: 'POST',
        path: '/servers',
      });
    });
    await expectRejection(h.provision.provision({ provisioningJobId: a.provisioningJobId }));
    sinon.restore();
    expect((await rows(h, a)).instance.serverId).to.equal(null);
    // The server boots and joins the tailnet on its own.
    await eventually(() => (cloud(h).devices.length === 1 ? true : undefined));
    return a;
  }

  it('refuses an unknown job', async () => {
    const id = '00000000-0000-4000-8000-000000000001';
    const err = await expectRejection(h.teardown.rollback(id));
    expect(err).to.be.instanceOf(NotFoundError);
    expect(err.message).to.equal(`Job ${id} not found`);
  });

  it('deletes a server found only by its job label, and its device, then records the rollback', async () => {
    const a = await serverCreatedButNotRecorded();
    const op = await newOperation(h, 'rollback', a.agentId);
    const result = await h.teardown.rollback(a.provisioningJobId, { operationId: op });
    expect(result).to.deep.equal({ cleanedHetzner: true, cleanedTailscale: true, alreadyRolledBack: false });

    const { agent, instance, job } = await rows(h, a);
    expect(instance.status).to.equal('failed');
    expect(instance.error).to.equal('Rolled back after provision failure. Cleaned: Hetzner=true, Tailscale=true');
    expect(agent.status).to.equal('error');
    expect(job!.status).to.equal('rolled_back');
    expect(cloud(h).servers).to.have.length(0);
    expect(cloud(h).devices).to.have.length(0);
    expect((await transitionsOf(h, a.instanceId)).at(-1)).to.equal('provisioning→failed');
    expect((await transitionsOf(h, a.agentId)).at(-1)).to.equal('provisioning→error');
    expect((await transitionsOf(h, a.provisioningJobId)).at(-1)).to.equal('running→rolled_back');
  });

  it('changes nothing when run a second time', async () => {
    const a = await serverCreatedButNotRecorded();
    await h.teardown.rollback(a.provisioningJobId);
    const before = { rows: await rows(h, a), events: await h.ds.query('SELECT count(*)::int AS n FROM events') };
    h.sim.control.resetRequestCounts();

    const again = await h.teardown.rollback(a.provisioningJobId);
    expect(again).to.deep.equal({ cleanedHetzner: false, cleanedTailscale: false, alreadyRolledBack: true });
    expect(h.sim.control.requestCounts()).to.deep.equal({});
    expect(await h.ds.query('SELECT count(*)::int AS n FROM events')).to.deep.equal(before.events);
    const after = await rows(h, a);
    expect(after.instance).to.deep.equal(before.rows.instance);
    expect(after.job).to.deep.equal(before.rows.job);
    expect(after.agent).to.deep.equal(before.rows.agent);
  });

  it('deletes the recorded server when the device never enrolled', async () => {
    const a = await newAgent(h);
    // Enrollment never completes in time: the provision fails after recording the server.
    h.sim.control.setTimings({ enrollDelayMs: 60_000 });
    sinon.stub(h.tailscale, 'waitForEnrollment').rejects(new Error('enrollment timed out'));
    await expectRejection(h.provision.provision({ provisioningJobId: a.provisioningJobId }));
    sinon.restore();
    const { instance } = await rows(h, a);
    expect(instance.serverId).to.be.a('string');

    const result = await h.teardown.rollback(a.provisioningJobId);
    expect(result).to.deep.equal({ cleanedHetzner: true, cleanedTailscale: false, alreadyRolledBack: false });
    expect(cloud(h).servers).to.have.length(0);
    expect((await rows(h, a)).instance.error).to.equal(
      'Rolled back after provision failure. Cleaned: Hetzner=true, Tailscale=false',
    );
  });

  it('rolls back a job that never started, with nothing to clean', async () => {
    const a = await newAgent(h);
    const result = await h.teardown.rollback(a.provisioningJobId);
    expect(result).to.deep.equal({ cleanedHetzner: false, cleanedTailscale: false, alreadyRolledBack: false });
    const { agent, instance, job } = await rows(h, a);
    expect(instance.status).to.equal('failed');
    expect(agent.status).to.equal('error');
    expect(job!.status).to.equal('rolled_back');
  });

  it('stays retryable when the cloud fails, and finishes on the next run', async () => {
    const a = await serverCreatedButNotRecorded();
    h.sim.control.setFaults([{ method: 'DELETE', route: '/hetzner/v1/servers/{id}', status: 503, times: 20 }]);
    const err = await expectRejection(h.teardown.rollback(a.provisioningJobId));
    expect(err).to.be.instanceOf(CloudApiError);
    const mid = await rows(h, a);
    // Out of provisioning at once, so a late attempt cannot record a server; the job is not rolled back yet.
    expect(mid.instance.status).to.equal('failed');
    expect(mid.job!.status).to.not.equal('rolled_back');

    h.sim.control.clearFaults();
    const result = await h.teardown.rollback(a.provisioningJobId);
    expect(result.cleanedHetzner).to.equal(true);
    expect((await rows(h, a)).job!.status).to.equal('rolled_back');
    expect(cloud(h).servers).to.have.length(0);
    expect(cloud(h).devices).to.have.length(0);
  });

  it('refuses a job that succeeded', async () => {
    const a = await provisionedAgent(h);
    const err = await expectRejection(h.teardown.rollback(a.provisioningJobId));
    expect(err).to.be.instanceOf(StateConflictError);
    expect(cloud(h).servers).to.have.length(1);
  });

  it('closes the job of an instance that was destroyed meanwhile without touching it', async () => {
    const a = await newAgent(h);
    await h.teardown.destroy(a.agentId);
    const result = await h.teardown.rollback(a.provisioningJobId);
    expect(result.alreadyRolledBack).to.equal(false);
    const { instance, job, agent } = await rows(h, a);
    expect(instance.status).to.equal('destroyed');
    expect(agent.status).to.equal('destroyed');
    expect(job!.status).to.equal('rolled_back');
  });
});
