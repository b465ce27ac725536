import { expect } from 'chai';
import { StateConflictError } from '../../src/errors';
import { transition } from '../../src/db/transitions';
import { BOARD, markRunning, startApiHarness, type ApiHarness } from '../api/harness';
import { reboot } from '../../src/operations/types/reboot';
import { RebootWorkflow } from '../../src/workflows/reboot.workflow';
import { cloud, expectRejection, FAST_TIMINGS, newOperation, provisionedAgent, rows, transitionsOf, useLifecycleHarness, type AgentFixture } from '../helpers/lifecycle';

const REBOOT = '/hetzner/v1/servers/{id}/actions/reboot';
const RESET = '/hetzner/v1/servers/{id}/actions/reset';

describe('lifecycle: reboot', function () {
  const h = useLifecycleHarness('lc_reboot');
  let workflow: RebootWorkflow;

  const serverOf = (a: AgentFixture) => cloud(h).servers.find((s) => s.labels['tailfleet-agent'] === a.agentId)!;
  const deviceOf = (a: AgentFixture, id: string) => cloud(h).devices.find((d) => d.id === id);
  const requests = (key: string) => h.sim.control.requestCounts()[`POST ${key}`] ?? 0;

  beforeEach(() => {
    // A restart the workflow can watch: the device stays offline for a boot long enough to be seen.
    h.sim.control.setTimings({ bootMs: 300 });
    workflow = new RebootWorkflow(h.workflowDeps);
  });
  afterEach(() => {
    h.sim.control.setTimings({ bootMs: FAST_TIMINGS.bootMs });
  });

  it('sends the ACPI reboot, waits for the device to drop off and come back, and records running again', async () => {
    const a = await provisionedAgent(h);
    const op = await newOperation(h, 'reboot', a.agentId);
    await workflow.reboot(a.agentId, { operationId: op });

    const { agent, instance } = await rows(h, a);
    expect(instance.status).to.equal('running');
    expect(agent.status).to.equal('active');
    expect(serverOf(a).status).to.equal('running');
    expect(deviceOf(a, instance.tailscaleDeviceId!)?.connectedToControl).to.equal(true);
    expect(requests(REBOOT)).to.equal(1);
    expect(requests(RESET)).to.equal(0);
    expect((await transitionsOf(h, a.instanceId)).slice(-2)).to.deep.equal(['running→rebooting', 'rebooting→running']);
  });

  it('resets the server when it ignores the ACPI signal past the timeout, and the device comes back', async () => {
    const a = await provisionedAgent(h);
    h.sim.control.updateServer(serverOf(a).id, { ignoresAcpi: true });
    await workflow.reboot(a.agentId, { operationId: await newOperation(h, 'reboot', a.agentId) });
    const { instance } = await rows(h, a);
    expect(instance.status).to.equal('running');
    expect(requests(REBOOT)).to.equal(1);
    expect(requests(RESET)).to.equal(1);
    expect(deviceOf(a, instance.tailscaleDeviceId!)?.connectedToControl).to.equal(true);
  });

  it('refuses an instance that is not running, with the descriptor’s words', async () => {
    const a = await provisionedAgent(h);
    await h.power.stop(a.agentId);
    const err = await expectRejection(workflow.reboot(a.agentId, { operationId: await newOperation(h, 'reboot', a.agentId) }));
    expect(err).to.be.instanceOf(StateConflictError);
    expect(err.message).to.equal(reboot.command.refusal);
    expect(requests(REBOOT)).to.equal(0);
  });

  it('is safe to deliver again: a redelivery after the reboot finished does nothing, one mid-way reboots and finishes', async () => {
    const a = await provisionedAgent(h);
    const op = await newOperation(h, 'reboot', a.agentId);
    await workflow.reboot(a.agentId, { operationId: op });
    await workflow.reboot(a.agentId, { operationId: op });
    expect(requests(REBOOT)).to.equal(1);
    expect((await rows(h, a)).instance.status).to.equal('running');

    // A delivery that died after marking the instance rebooting: the next one resumes from there.
    const b = await provisionedAgent(h, 'second');
    const op2 = await newOperation(h, 'reboot', b.agentId);
    await transition(h.ds, { entity: 'instance', id: b.instanceId, from: ['running'], to: 'rebooting', reason: 'test', operationId: op2 });
    await workflow.reboot(b.agentId, { operationId: op2 });
    expect((await rows(h, b)).instance.status).to.equal('running');
    expect([requests(REBOOT), requests(RESET)]).to.deep.equal([2, 0]);
  });

  it('fails, keeping the instance rebooting, when the device never comes back after the reset', async () => {
    const a = await provisionedAgent(h);
    h.sim.control.updateServer(serverOf(a).id, { ignoresAcpi: true });
    // The machine never boots back within the enrollment timeout.
    h.sim.control.setTimings({ bootMs: 60_000 });
    const err = await expectRejection(workflow.reboot(a.agentId, { operationId: await newOperation(h, 'reboot', a.agentId) }));
    expect(err.message).to.match(/did not come back online/);
    expect(requests(RESET)).to.equal(1);
    expect((await rows(h, a)).instance.status).to.equal('rebooting');
  });
});

describe('api: POST /v1/agents/:id/reboot', function () {
  let h: ApiHarness;
  before(async () => {
    h = await startApiHarness('api_reboot');
  });
  after(async () => {
    await h?.close();
  });

  it('is in the contract, answers 409 with the descriptor’s words when nothing runs, and 202 once the instance runs', async () => {
    const created = await h.api.request('POST', '/v1/agents', { body: { name: 'reboot-box' } });
    expect(created.status, created.text).to.equal(201);
    const agentId = (created.body as { agent: { id: string } }).agent.id;

    const refused = await h.api.request('POST', `/v1/agents/${agentId}/reboot`);
    expect(refused.status, refused.text).to.equal(409);
    expect(refused.body.detail).to.equal(reboot.command.refusal);

    await markRunning(h.ds, agentId);
    const accepted = await h.api.request('POST', `/v1/agents/${agentId}/reboot`);
    expect(accepted.status, accepted.text).to.equal(202);
    expect(accepted.body.operation.type).to.equal('reboot');

    const spec = await h.api.request('GET', '/v1/openapi.json');
    expect(spec.status, spec.text).to.equal(200);
    expect(spec.body.paths['/v1/agents/{id}/reboot'].post.responses['409'].description).to.contain(reboot.command.refusal);
    // Its own queue, shown in Bull Board beside the others.
    const auth = { authorization: `Basic ${Buffer.from(`${BOARD.user}:${BOARD.password}`).toString('base64')}` };
    const board = await h.api.request('GET', '/admin/queues/api/queues', { token: null, headers: auth });
    expect((board.body.queues as { name: string }[]).map((q) => q.name)).to.include('reboot');
  });
});
