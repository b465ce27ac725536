import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { JOB_LABEL, MANAGED_LABEL } from '../../src/fleet/server-labels';
import { waitFor } from '../pipeline/stack';
import { launchedSuite } from '../helpers/launched';

// The whole service, built by the composition root: drift made in the console is found by a pass
// requested over the API, repaired, and shown in the report and the metrics.

describe('reconcile: end to end through the API', function () {
  this.timeout(30_000);
  const stack = launchedSuite('reconcile_e2e', {
      env: { RECONCILE_INTERVAL_SECONDS: '0', RECONCILE_ORPHANS: 'delete', RECONCILE_GRACE_SECONDS: '0' },
    });

  async function pass() {
    const posted = await stack.api.post('/v1/reconcile');
    expect(posted.status).to.equal(202);
    const opId = posted.body.operation.id as string;
    const done = await waitFor('the reconcile operation to finish', async () => {
      const res = await stack.api.get(`/v1/operations/${opId}`);
      return ['succeeded', 'failed'].includes(res.body.operation?.status) ? res.body.operation : undefined;
    });
    expect(done.status, done.error).to.equal('succeeded');
    const { status, body } = await stack.api.get('/v1/reconcile');
    expect(status).to.equal(200);
    expect(body.report.operationId).to.equal(opId);
    return body.report;
  }

  it('repairs a server deleted in the console, deletes orphans, leaves unlabelled servers, then finds nothing new', async () => {
    const created = await stack.api.post('/v1/agents', { name: 'e2e-drift' });
    expect(created.status).to.equal(201);
    const agentId = created.body.agent.id as string;
    const running = await waitFor('the agent to be provisioned', async () => {
      const res = await stack.api.get(`/v1/agents/${agentId}`);
      return res.body.instance?.status === 'running' ? res.body.instance : undefined;
    });
    const managed = { [MANAGED_LABEL.key]: MANAGED_LABEL.value };
    const sim = (method: string, path: string, body?: unknown) =>
      fetch(`${stack.suite.sim.url}/_sim${path}`, {
        method,
        headers: { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(async (res) => {
        expect(res.ok, `${method} ${path}`).to.equal(true);
        return res.json() as Promise<any>;
      });
    await sim('DELETE', `/servers/${running.serverId}`);
    // Left behind by a provision: tailfleet labels every server it makes with its job (a server with
    // only managed-by is not provably tailfleet's, and the ownership guard keeps it).
    const { server: orphan } = await sim('POST', '/servers', {
      name: 'left-behind',
      status: 'running',
      labels: { ...managed, [JOB_LABEL]: randomUUID() },
    });
    const { server: handMade } = await sim('POST', '/servers', { name: 'hand-made', status: 'running' });

    const report = await pass();

    expect(report.drift.map((d: any) => [d.kind, d.action])).to.deep.equal([['server_gone', 'repaired']]);
    expect(report.orphanServers.map((o: any) => [o.name, o.action])).to.deep.equal([['left-behind', 'deleted']]);
    // The lost machine's device had nobody left to own it: deleted with the orphans.
    expect(report.orphanDevices.map((o: any) => [o.deviceId, o.action])).to.deep.equal([[running.tailscaleDeviceId, 'deleted']]);
    const agent = await stack.api.get(`/v1/agents/${agentId}`);
    expect(agent.body.agent.status).to.equal('error');
    const state = stack.suite.sim.control.state();
    expect(state.servers.map((s) => s.id)).to.include(handMade.id).and.not.include(orphan.id);

    const metrics = await fetch(`${stack.tf.url}/metrics`).then((res) => res.text());
    expect(metrics).to.contain('tailfleet_reconcile_findings{kind="drifted_instances"} 1');
    expect(metrics).to.contain('tailfleet_reconcile_findings{kind="repairs"} 3');
    expect(metrics).to.match(/tailfleet_reconcile_repairs_total\{kind="server_gone"\} 1/);

    const second = await pass();
    expect(second.summary).to.include({ driftedInstances: 0, orphanServers: 0, orphanDevices: 0, repairs: 0, newFindings: 0 });
    expect(stack.suite.sim.control.state().servers.map((s) => s.id)).to.include(handMade.id);
  });

  it('refuses an unauthenticated request', async () => {
    const res = await fetch(`${stack.tf.url}/v1/reconcile`, { method: 'POST' });
    expect(res.status).to.equal(401);
  });
});
