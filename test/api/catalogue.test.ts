import { expect } from 'chai';
import { HetznerClient } from '../../src/clients/hetzner/hetzner.client';
import { silentLogger } from '../../src/lib/logger';
import { CloudCatalogue } from '../../src/clients/hetzner/catalogue';
import { SIM_DEFAULT_CREDENTIALS, startSimulator, type RunningSimulator } from '../../src/simulator';

// The catalogue check against the simulator's GET /server_types and GET /locations, over HTTP.

describe('cloud catalogue', () => {
  let sim: RunningSimulator;
  let now = 0;

  before(async () => {
    sim = await startSimulator({});
  });

  after(async () => {
    await sim?.close();
  });

  const catalogue = (token: string = SIM_DEFAULT_CREDENTIALS.hetznerToken) =>
    new CloudCatalogue({
      hetzner: new HetznerClient({ baseUrl: sim.hetznerUrl, token, maxRetries: 0 }),
      logger: silentLogger,
      ttlMs: 60_000,
      now: () => now,
    });

  it('judges type and location from one cached read, and reads again once the copy is old', async () => {
    const c = catalogue();
    sim.control.resetRequestCounts();
    expect(await c.check({ serverType: 'cx22', location: 'fsn1' })).to.deep.equal([]);
    expect((await c.check({ serverType: 'cax11', location: 'ash' }))[0]).to.include({ field: 'serverType' });
    expect((await c.check({ serverType: 'cx22', location: 'mars1' }))[0]).to.include({ field: 'location' });
    const reads = () => Object.entries(sim.control.requestCounts()).filter(([k]) => /server_types|locations/.test(k));
    expect(reads().map(([, n]) => n)).to.deep.equal([1, 1]);
    now += 61_000;
    await c.check({ serverType: 'cx22', location: 'fsn1' });
    expect(reads().map(([, n]) => n)).to.deep.equal([2, 2]);
  });

  it('does not judge while the catalogue cannot be read', async () => {
    expect(await catalogue('not-the-token').check({ serverType: 'zz99', location: 'mars1' })).to.deep.equal([]);
  });

  it('with several placements refuses an unknown place, and a sold-out one only when every place is', async () => {
    const c = catalogue();
    const soldOut = { location: 'sin', serverType: 'ccx13' };
    expect(await c.check({ ...soldOut, placements: [soldOut, { location: 'fsn1', serverType: 'cx22' }] })).to.deep.equal([]);
    const unknown = await c.check({ ...soldOut, placements: [soldOut, { location: 'mars1', serverType: 'cx22' }] });
    expect(unknown.map((p) => p.field)).to.deep.equal(['placements.1.location']);
    const single = await c.check({ ...soldOut, placements: [soldOut] });
    expect(single.map((p) => p.field)).to.deep.equal(['serverType']);
    expect(single[0]!.message).to.match(/right now$/);
  });
});
