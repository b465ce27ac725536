import { expect } from 'chai';
import { cronProblem, isTimeZone, lastFiring, targetAt } from '../../src/pools/schedule';

describe('pools: schedules', () => {
  const office = {
    minReady: 0,
    maxSize: 4,
    schedules: [
      { cron: '0 8 * * 1-5', timezone: 'Europe/Berlin', minReady: 3 },
      { cron: '0 18 * * 1-5', timezone: 'Europe/Berlin', minReady: 0 },
    ],
  };

  it('reads a cron expression in its time zone on both sides of the spring-forward change', () => {
    const morning = office.schedules[0]!;
    // Friday 27 March 2026, UTC+1: 08:00 is 07:00 UTC.
    expect(lastFiring(morning, new Date('2026-03-27T07:30:00Z'))?.toISOString()).to.equal('2026-03-27T07:00:00.000Z');
    // Monday 30 March 2026, UTC+2 since Sunday: 08:00 is 06:00 UTC.
    expect(lastFiring(morning, new Date('2026-03-30T06:30:00Z'))?.toISOString()).to.equal('2026-03-30T06:00:00.000Z');
    expect(targetAt(office, new Date('2026-03-30T05:59:59Z'))).to.equal(0);
    expect(targetAt(office, new Date('2026-03-30T06:00:00Z'))).to.equal(3);
  });

  it('and on both sides of the fall-back change', () => {
    // Berlin returns to UTC+1 on Sunday 25 October 2026: Monday 26 October 18:00 is 17:00 UTC.
    expect(targetAt(office, new Date('2026-10-23T15:59:59Z'))).to.equal(3);
    expect(targetAt(office, new Date('2026-10-23T16:00:00Z'))).to.equal(0);
    expect(targetAt(office, new Date('2026-10-26T16:30:00Z'))).to.equal(3);
    expect(targetAt(office, new Date('2026-10-26T17:00:00Z'))).to.equal(0);
  });

  it('keeps minReady as a floor and maxSize as a ceiling', () => {
    expect(targetAt({ ...office, minReady: 1 }, new Date('2026-03-28T12:00:00Z'))).to.equal(1);
    expect(targetAt({ ...office, maxSize: 2 }, new Date('2026-03-30T09:00:00Z'))).to.equal(2);
    expect(targetAt({ minReady: 2, maxSize: null, schedules: [] }, new Date())).to.equal(2);
  });

  it('names what is wrong with an expression or a zone', () => {
    expect(cronProblem('0 8 * * 1-5')).to.equal(null);
    expect(cronProblem('0 0 8 * * 1-5')).to.match(/five fields/);
    expect(cronProblem('99 8 * * *')).to.match(/not a valid cron/);
    expect(isTimeZone('America/New_York')).to.equal(true);
    expect(isTimeZone('Nowhere/Land')).to.equal(false);
    expect(isTimeZone('')).to.equal(false);
  });
});
