import { expect } from 'chai';
import { Fleet } from '../../src/fleet/fleet';
import { guardImageDelete, judgeDevice, judgeServer } from '../../src/fleet/ownership-guard';
import { AGENT_LABEL, FLEET_LABEL, MANAGED_LABEL, serverLabels } from '../../src/fleet/server-labels';
import { SIM_DEFAULT_CREDENTIALS } from '../../src/simulator';
import { waitFor } from '../pipeline/stack';
import { launchedSuite, operationEnded } from '../helpers/launched';

// Nothing is deleted without proof that it is ours: the whole service over HTTP, the simulator
// changing labels, tags and tailnet addresses behind its back.

interface Running {
  agentId: string;
  instanceId: string;
  serverId: string;
  deviceId: string;
  tailscaleIp: string;
  tailscaleHostname: string;
}

interface EventView {
  entityType: string;
  fromStatus: string | null;
  toStatus: string;
  reason: string;
  operationId: string | null;
}

describe('lifecycle: ownership guard', function () {
  this.timeout(30_000);
  const stack = launchedSuite('lc_ownership', { env: { RECONCILE_INTERVAL_SECONDS: '0', RECONCILE_ORPHANS: 'delete', RECONCILE_GRACE_SECONDS: '0' } });

  const sim = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${stack.suite.sim.url}/_sim${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    expect(res.ok, `${method} /_sim${path}: ${res.status}`).to.equal(true);
    return (await res.json()) as any;
  };

  /** The Tailscale API as an admin calls it: OAuth client credentials, then the bearer token. */
  async function tailscale(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const tokenRes = await fetch(`${stack.suite.sim.tailscaleUrl}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        client_id: SIM_DEFAULT_CREDENTIALS.tailscaleClientId,
        client_secret: SIM_DEFAULT_CREDENTIALS.tailscaleClientSecret,
      }),
    });
    const { access_token: token } = (await tokenRes.json()) as { access_token: string };
    const res = await fetch(`${stack.suite.sim.tailscaleUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  async function running(name: string): Promise<Running> {
    const created = await stack.api.post('/v1/agents', { name });
    expect(created.status).to.equal(201);
    const agentId = created.body.agent.id as string;
    const instance = await waitFor(`${name} to be provisioned`, async () => {
      const res = await stack.api.get(`/v1/agents/${agentId}`);
      return res.body.instance?.status === 'running' ? res.body.instance : undefined;
    });
    return {
      agentId,
      instanceId: instance.id,
      serverId: String(instance.serverId),
      deviceId: instance.tailscaleDeviceId,
      tailscaleIp: instance.tailscaleIp,
      tailscaleHostname: instance.tailscaleHostname,
    };
  }

  async function finish(agentId: string, verb: 'destroy' | 'stop') {
    const posted = await stack.api.post(`/v1/agents/${agentId}/${verb}`);
    expect(posted.status).to.equal(202);
    return (await operationEnded(stack.api, posted.body.operation.id)).operation;
  }

  async function eventsOf(agentId: string): Promise<EventView[]> {
    const res = await stack.api.get(`/v1/agents/${agentId}/events?limit=100`);
    expect(res.status).to.equal(200);
    return res.body.items as EventView[];
  }

  async function reconcile() {
    const posted = await stack.api.post('/v1/reconcile');
    expect(posted.status).to.equal(202);
    const pass = (await operationEnded(stack.api, posted.body.operation.id)).operation;
    expect(pass.status, pass.error).to.equal('succeeded');
    return (await stack.api.get('/v1/reconcile')).body.report;
  }

  const state = () => stack.suite.sim.control.state();
  const serverOf = (id: string) => state().servers.find((s) => String(s.id) === id);
  const deviceOf = (id: string) => state().devices.find((d) => d.id === id);

  it('sets a device IPv4 address like the Tailscale API, refusing one another device holds', async () => {
    const [a, b] = [await running('ip-a'), await running('ip-b')];
    const taken = await tailscale('POST', `/device/${b.deviceId}/ip`, { ipv4: a.tailscaleIp });
    expect(taken.status).to.equal(409);
    expect(taken.body.message).to.match(/already in use/);
    expect((await tailscale('POST', `/device/${b.deviceId}/ip`, { ipv4: '8.8.8.8' })).status).to.equal(400);
    expect((await tailscale('POST', '/device/0/ip', { ipv4: '100.100.1.2' })).status).to.equal(404);
    expect(deviceOf(b.deviceId)!.addresses[0]).to.equal(b.tailscaleIp);
    // Once A's device is gone its address is free for an admin to hand out again.
    await sim('DELETE', `/devices/${a.deviceId}`);
    expect((await tailscale('POST', `/device/${b.deviceId}/ip`, { ipv4: a.tailscaleIp })).status).to.equal(200);
    expect(deviceOf(b.deviceId)!.addresses[0]).to.equal(a.tailscaleIp);
  });

  it("destroying A after its address went to B's device leaves B's device and records a finding", async () => {
    const [a, b] = [await running('owner-a'), await running('owner-b')];
    // A's device removed by hand; an admin gives A's old address to B's device.
    await sim('DELETE', `/devices/${a.deviceId}`);
    expect((await tailscale('POST', `/device/${b.deviceId}/ip`, { ipv4: a.tailscaleIp })).status).to.equal(200);

    const op = await finish(a.agentId, 'destroy');
    expect(op.status, op.error).to.equal('succeeded');

    // B's machine is still on the tailnet, with the address; A is destroyed, its server gone.
    expect(deviceOf(b.deviceId), "B's device").to.not.equal(undefined);
    expect(deviceOf(b.deviceId)!.addresses).to.include(a.tailscaleIp);
    expect(serverOf(a.serverId)).to.equal(undefined);
    expect((await stack.api.get(`/v1/agents/${a.agentId}`)).body.agent.status).to.equal('destroyed');
    expect((await stack.api.get(`/v1/agents/${b.agentId}`)).body.instance.status).to.equal('running');

    // Why was A's server deleted, and why was B's device not? Both answered by A's events.
    const events = await eventsOf(a.agentId);
    const deleted = events.find((e) => e.toStatus === 'server_deleted');
    expect(deleted, 'server_deleted event').to.not.equal(undefined);
    expect(deleted!.operationId).to.equal(op.id);
    expect(deleted!.reason).to.contain(`destroy: server ${a.serverId}`);
    expect(deleted!.reason).to.contain(`recorded id ${a.serverId}`);
    expect(deleted!.reason).to.contain(`label ${AGENT_LABEL}=${a.agentId}`);
    const refused = events.filter((e) => e.toStatus === 'needs_attention');
    expect(refused.length, 'needs_attention events').to.be.at.least(1);
    expect(refused[0]!.reason).to.contain(`device ${b.deviceId}`);
    expect(refused[0]!.reason).to.contain(`recorded id ${a.deviceId} (device is ${b.deviceId})`);
    expect(refused[0]!.reason).to.contain(`hostname ${a.tailscaleHostname}`);
    expect(refused[0]!.reason).to.contain(`tailnet address ${a.tailscaleIp} (confirms only)`);
    expect(events.some((e) => e.toStatus === 'device_deleted')).to.equal(false);

    // The reconcile report lists the finding, and settles it: the device is B's instance's.
    const report = await reconcile();
    const finding = report.attention.find((f: any) => f.resourceId === b.deviceId);
    expect(finding, 'finding in the report').to.include({ resourceType: 'device', operation: 'destroy', agentId: a.agentId, state: 'resolved' });
    expect(finding.detail).to.contain(`recorded by live instance ${b.instanceId}`);
    expect(finding.missing.join()).to.contain('recorded id');
    expect(deviceOf(b.deviceId), "B's device after the pass").to.not.equal(undefined);
    expect((await reconcile()).attention.map((f: any) => f.resourceId)).to.not.include(b.deviceId);
  });

  it("keeps a server whose labels were changed to another agent's id, and does not power it off either", async () => {
    const [a, other] = [await running('relabel-a'), await running('relabel-other')];
    const labels = { ...serverOf(a.serverId)!.labels, [AGENT_LABEL]: other.agentId };
    await sim('PATCH', `/servers/${a.serverId}`, { labels });

    const stop = await finish(a.agentId, 'stop');
    expect(stop.status).to.equal('failed');
    expect(stop.error).to.match(new RegExp(`Server ${a.serverId} is not this agent's`));
    expect(serverOf(a.serverId)!.status).to.equal('running');

    const op = await finish(a.agentId, 'destroy');
    expect(op.status, op.error).to.equal('succeeded');
    expect(serverOf(a.serverId), 'the relabelled server').to.not.equal(undefined);
    expect(serverOf(a.serverId)!.status).to.equal('running');
    expect(deviceOf(a.deviceId), "A's own device is deleted").to.equal(undefined);
    expect((await stack.api.get(`/v1/agents/${a.agentId}`)).body.agent.status).to.equal('destroyed');

    const events = await eventsOf(a.agentId);
    const refused = events.filter((e) => e.toStatus === 'needs_attention' && e.reason.includes(`server ${a.serverId}`));
    expect(refused.map((e) => e.reason.split(':')[0])).to.include.members(['stop', 'destroy']);
    expect(refused.at(-1)!.reason).to.contain(`label ${AGENT_LABEL}=${a.agentId} (carries ${other.agentId})`);
    expect(events.some((e) => e.toStatus === 'device_deleted' && e.reason.includes(`recorded id ${a.deviceId}`))).to.equal(true);

    // The pass keeps it too: labelled for a live agent, so never an orphan; the finding stays open.
    const report = await reconcile();
    expect(serverOf(a.serverId), 'after the pass').to.not.equal(undefined);
    const finding = report.attention.find((f: any) => f.resourceId === a.serverId && f.operation === 'destroy');
    expect(finding).to.include({ resourceType: 'server', action: 'delete', state: 'open' });
    expect(report.summary.needsAttention).to.be.at.least(1);
    expect(serverOf(other.serverId)!.status).to.equal('running');
  });

  it("keeps a device with A's hostname but foreign tags", async () => {
    const a = await running('tags-a');
    await sim('DELETE', `/devices/${a.deviceId}`);
    const { device: impostor } = await sim('POST', '/devices', { hostname: a.tailscaleHostname, tags: ['tag:other'] });

    const op = await finish(a.agentId, 'destroy');
    expect(op.status, op.error).to.equal('succeeded');
    expect(deviceOf(impostor.id), 'the foreign-tagged device').to.not.equal(undefined);
    expect(serverOf(a.serverId)).to.equal(undefined);
    const refused = (await eventsOf(a.agentId)).find((e) => e.toStatus === 'needs_attention' && e.reason.includes(`device ${impostor.id}`));
    expect(refused, 'needs_attention event').to.not.equal(undefined);
    expect(refused!.reason).to.contain('missing tags tag:agent (carries tag:other)');
    expect(refused!.reason).to.contain(`matched hostname ${a.tailscaleHostname}`);
  });

  it('keeps its recorded device once its tags were changed', async () => {
    const a = await running('retag-a');
    await sim('PATCH', `/devices/${a.deviceId}`, { tags: ['tag:laptop'] });
    const op = await finish(a.agentId, 'destroy');
    expect(op.status, op.error).to.equal('succeeded');
    expect(deviceOf(a.deviceId)).to.not.equal(undefined);
    const refused = (await eventsOf(a.agentId)).find((e) => e.toStatus === 'needs_attention');
    expect(refused!.reason).to.contain(`recorded id ${a.deviceId}`).and.contain('carries tag:laptop');
  });

  it('deletes a device found only by its hostname when it carries the fleet tags', async () => {
    const a = await running('rejoined-a');
    // The recorded device is gone; the machine joined again under the same hostname.
    await sim('DELETE', `/devices/${a.deviceId}`);
    const { device: rejoined } = await sim('POST', '/devices', { hostname: a.tailscaleHostname, tags: ['tag:agent'] });

    const op = await finish(a.agentId, 'destroy');
    expect(op.status, op.error).to.equal('succeeded');
    expect(deviceOf(rejoined.id)).to.equal(undefined);
    const deleted = (await eventsOf(a.agentId)).find((e) => e.toStatus === 'device_deleted');
    expect(deleted, 'device_deleted event').to.not.equal(undefined);
    expect(deleted!.operationId).to.equal(op.id);
    expect(deleted!.reason).to.contain(`device ${rejoined.id}`).and.contain(`hostname ${a.tailscaleHostname}`).and.contain('tags tag:agent');
  });
});

describe('ownership rules', () => {
  const fleet = new Fleet('blue');
  const agentId = '3f2a9c1d-0000-4000-8000-000000000001';

  it('deletes an image only when its labels carry this agent and this fleet', () => {
    const labels = { [AGENT_LABEL]: agentId, [FLEET_LABEL]: 'blue', [MANAGED_LABEL.key]: MANAGED_LABEL.value };
    expect(guardImageDelete({ id: 7, labels }, agentId, fleet).ours).to.equal(true);
    const otherAgent = guardImageDelete({ id: 7, labels: { ...labels, [AGENT_LABEL]: 'x' } }, agentId, fleet);
    expect(otherAgent).to.deep.include({ ours: false, missing: [`label ${AGENT_LABEL}=${agentId} (carries x)`] });
    expect(guardImageDelete({ id: 7, labels: { ...labels, [FLEET_LABEL]: 'green' } }, agentId, fleet).ours).to.equal(false);
    expect(guardImageDelete({ id: 7, labels: { [AGENT_LABEL]: agentId } }, agentId, new Fleet()).ours).to.equal(false);
  });

  it('never lets a tailnet address alone justify a device delete', () => {
    const device = { id: '1', hostname: 'someone-else', name: 'someone-else.ts.net', tags: ['tag:agent'], addresses: ['100.64.0.9'] };
    const v = judgeDevice(device, { recordedIds: ['2'], hostname: fleet.hostname('a', agentId), tags: ['tag:agent'], ip: '100.64.0.9' });
    expect(v.ours).to.equal(false);
    expect(v.matched).to.include('tailnet address 100.64.0.9 (confirms only)');
  });

  it('accepts a server without a recorded id on its labels alone, and names the job when asked', () => {
    const labels = serverLabels(fleet, { agentId, provisioningJobId: 'job-1', instanceId: 'i-1' });
    expect(judgeServer(fleet, { id: 5, labels }, { agentId, provisioningJobId: 'job-1' }).ours).to.equal(true);
    expect(judgeServer(fleet, { id: 5, labels }, { agentId, provisioningJobId: 'job-2' }).ours).to.equal(false);
    expect(judgeServer(new Fleet('green'), { id: 5, labels }, { agentId, recordedIds: [5] }).ours).to.equal(false);
  });
});
