import { expect } from 'chai';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import { Event, WebhookDelivery } from '../../src/entities';
import { API_TOKEN, startApiHarness, type ApiHarness } from './harness';

describe('HTTP API: ownership findings', () => {
  let h: ApiHarness;
  let repo: OwnershipFindingRepository;
  let agentId: string;
  const ids: Record<'server' | 'device' | 'image' | 'orphan', string> = { server: '', device: '', image: '', orphan: '' };
  const tokens: Record<'read' | 'operate', string> = { read: '', operate: '' };

  before(async () => {
    h = await startApiHarness('findings');
    repo = new OwnershipFindingRepository({ dataSource: h.ds });
    const created = await h.api.request('POST', '/v1/agents', { body: { name: 'finding-box' } });
    expect(created.status, created.text).to.equal(201);
    agentId = created.body.agent.id;
    const refuse = (resourceType: 'server' | 'device' | 'image', resourceId: string, agent: string | null) =>
      repo.recordRefusal(
        { resourceType, resourceId, resourceName: `${resourceType}-${resourceId}`, action: 'delete', operation: 'destroy', agentId: agent, matched: ['labels'], missing: ['recorded id'] },
        'refused: no proof',
      );
    ids.server = (await refuse('server', '4242', agentId)).id;
    ids.device = (await refuse('device', 'dev-1', agentId)).id;
    ids.image = (await refuse('image', '777', agentId)).id;
    // A label's agent id that names no agent here: no event at refusal, one on resolution all the same.
    ids.orphan = (await refuse('server', '5151', '9b1c2a3e-0b7d-4c5e-9a41-2d6f8e7b1c03')).id;
    for (const scope of ['read', 'operate'] as const) {
      const res = await h.api.request('POST', '/v1/tokens', { body: { name: `findings-${scope}`, scope } });
      expect(res.status, res.text).to.equal(201);
      tokens[scope] = res.body.token;
    }
  });

  after(async () => {
    await h?.close();
  });

  const list = async (query = '') => {
    const res = await h.api.request('GET', `/v1/findings${query}`, { token: tokens.read });
    expect(res.status, res.text).to.equal(200);
    return res.body as { items: Array<{ id: string; status: string; resourceType: string; resolvedBy: string | null; resolution: string | null }>; nextCursor: string | null; limit: number };
  };

  it('lists findings newest first, filtered by status and kind, a page at a time', async () => {
    const all = await list();
    expect(all.items.map((f) => f.id)).to.deep.equal([ids.orphan, ids.image, ids.device, ids.server]);
    expect(all.items.every((f) => f.status === 'open')).to.equal(true);
    expect((await list('?kind=server')).items.map((f) => f.id)).to.deep.equal([ids.orphan, ids.server]);
    expect((await list('?kind=device,image&status=open')).items.map((f) => f.id)).to.deep.equal([ids.image, ids.device]);
    expect((await list('?status=resolved')).items).to.deep.equal([]);

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = await list(`?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.items.map((f) => f.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).to.deep.equal(all.items.map((f) => f.id));
  });

  it('refuses bad filters and cursors with a 400 naming the field', async () => {
    for (const [query, field] of [
      ['?status=closed', 'query.status'],
      ['?kind=vm', 'query.kind'],
      ['?limit=0', 'query.limit'],
      ['?cursor=bm90LWEtdXVpZA', 'query.cursor'],
      ['?colour=red', 'query'],
    ] as const) {
      const res = await h.api.request('GET', `/v1/findings${query}`);
      expect(res.status, query).to.equal(400);
      expect(JSON.stringify(res.body.errors), query).to.contain(field);
    }
  });

  it('resolves a finding for an admin only, with an event on the agent, on the stream and as a webhook', async () => {
    const hook = await h.api.request('POST', '/v1/webhooks', { body: { url: 'https://93.184.215.14/hook', events: ['finding.resolved'] } });
    expect(hook.status, hook.text).to.equal(201);
    const [{ max }] = (await h.ds.query(`SELECT coalesce(max(id), 0)::text AS max FROM events`)) as Array<{ max: string }>;
    const stream = await fetch(`${h.api.baseUrl}/v1/events/stream`, { headers: { authorization: `Bearer ${tokens.read}`, 'last-event-id': max } });
    expect(stream.status).to.equal(200);

    for (const token of [tokens.read, tokens.operate]) {
      const refused = await h.api.request('POST', `/v1/findings/${ids.server}/resolve`, { token, body: { note: 'deleted by hand' } });
      expect(refused.status).to.equal(403);
    }
    const res = await h.api.request('POST', `/v1/findings/${ids.server}/resolve`, { body: { note: '  deleted by hand in the console  ' } });
    expect(res.status, res.text).to.equal(200);
    expect(res.body).to.include({ id: ids.server, status: 'resolved', resolvedBy: 'bootstrap', resolution: 'deleted by hand in the console' });
    expect(res.body.resolvedAt).to.be.a('string');

    const again = await h.api.request('POST', `/v1/findings/${ids.server}/resolve`, { body: { note: 'twice' } });
    expect(again.status).to.equal(409);
    expect(again.body.detail).to.contain('resolved already');

    const events = await h.ds.getRepository(Event).find({ where: { entityType: 'finding', entityId: ids.server } });
    expect(events).to.have.length(1);
    expect(events[0]).to.include({ agentId, fromStatus: 'open', toStatus: 'resolved', actor: 'bootstrap' });
    expect(events[0]!.reason).to.contain('deleted by hand in the console');
    const timeline = await h.api.request('GET', `/v1/agents/${agentId}/events`);
    expect(timeline.body.items.map((e: { entityType: string }) => e.entityType)).to.include('finding');

    // The stream sends it (after every event since Last-Event-ID).
    const reader = stream.body!.getReader();
    const deadline = Date.now() + 10_000;
    let text = '';
    // One read in flight at a time: a read left behind by the timer is awaited again, not dropped.
    let pending = reader.read();
    while (!text.includes(`"entityId":"${ids.server}"`) && Date.now() < deadline) {
      const chunk = await Promise.race([pending, new Promise<null>((r) => setTimeout(() => r(null), 500))]);
      if (chunk === null) continue;
      if (chunk.done) break;
      text += new TextDecoder().decode(chunk.value);
      pending = reader.read();
    }
    await reader.cancel();
    expect(text).to.contain(`"entityType":"finding"`).and.to.contain(`"entityId":"${ids.server}"`);

    const deliveries = await h.ds.getRepository(WebhookDelivery).find({ where: { subscriptionId: hook.body.id } });
    expect(deliveries).to.have.length(1);
    expect(deliveries[0]!.type).to.equal('finding.resolved');
    expect(deliveries[0]!.data).to.deep.include({ from: 'open', to: 'resolved', actor: 'bootstrap' });
    expect((deliveries[0]!.data.finding as Record<string, unknown>)).to.include({ id: ids.server, resourceType: 'server', resourceId: '4242', resolvedBy: 'bootstrap' });

    expect((await list('?status=resolved')).items.map((f) => f.id)).to.deep.equal([ids.server]);
    expect((await list('?status=open')).items.map((f) => f.id)).to.not.include(ids.server);
  });

  it('resolves a finding whose agent is not in this database (the event has no agent)', async () => {
    const res = await h.api.request('POST', `/v1/findings/${ids.orphan}/resolve`, { body: { note: 'another fleet' } });
    expect(res.status, res.text).to.equal(200);
    const events = await h.ds.getRepository(Event).find({ where: { entityType: 'finding', entityId: ids.orphan } });
    expect(events.map((e) => e.agentId)).to.deep.equal([null]);
  });

  it('answers 404 for an unknown finding and 400 for a bad id or note, changing nothing', async () => {
    expect((await h.api.request('POST', '/v1/findings/6f1c2a9e-0b7d-4c5e-9a41-2d6f8e7b1c03/resolve', { body: { note: 'x' } })).status).to.equal(404);
    expect((await h.api.request('POST', '/v1/findings/not-a-uuid/resolve', { body: { note: 'x' } })).status).to.equal(400);
    for (const body of [{}, { note: '' }, { note: '   ' }, { note: 'x'.repeat(2001) }, { note: 7 }, { note: 'ok', extra: 1 }]) {
      const res = await h.api.request('POST', `/v1/findings/${ids.device}/resolve`, { body });
      expect(res.status, JSON.stringify(body)).to.equal(400);
    }
    const text = await h.api.request('POST', `/v1/findings/${ids.device}/resolve`, { raw: 'note=x', headers: { 'content-type': 'text/plain' } });
    expect(text.status).to.equal(415);
    expect((await list('?status=open')).items.map((f) => f.id)).to.include(ids.device);
    expect(await h.ds.getRepository(Event).count({ where: { entityType: 'finding', entityId: ids.device } })).to.equal(0);
  });

  it('keeps the reconciler\'s resolutions, as `system`', async () => {
    const row = await repo.resolve(ids.image, 'image gone');
    expect(row).to.include({ resolvedBy: 'system', resolution: 'image gone' });
    const res = await h.api.request('GET', '/v1/findings?kind=image', { token: API_TOKEN });
    expect(res.body.items[0]).to.include({ status: 'resolved', resolvedBy: 'system' });
  });
});
