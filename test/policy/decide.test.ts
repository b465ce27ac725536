import { expect } from 'chai';
import { loadConfig } from '../../src/config';
import { decide, policyRetryAt, type PolicyAgent, type PolicySettings } from '../../src/policy/decide';
import { idleLadderSchema } from '../../src/policy/idle-ladder';
import { problemsOf, validEnv } from '../helpers/config';

// The policies' decisions at the edges, with the moment given: the rules the loop applies to every
// agent each pass (the loop itself, over HTTP and PostgreSQL, is test/policy/policy.test.ts).

const T0 = new Date('2030-01-01T00:00:00Z');
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);
const settings: PolicySettings = { expiryWarningMs: 600_000, autoHibernateAfterMs: null };

function agent(over: Partial<PolicyAgent> = {}): PolicyAgent {
  return {
    id: 'a',
    status: 'active',
    idle: [
      { afterSeconds: 1800, action: 'stop' },
      { afterSeconds: 86400, action: 'hibernate' },
    ],
    createdAt: T0,
    updatedAt: T0,
    expiresAt: null,
    expiryWarnedFor: null,
    instanceStatus: 'running',
    instanceStartedAt: T0,
    moments: { reported: null, leaseEnd: null, command: null },
    leased: false,
    operationPending: false,
    ...over,
  };
}

const acts = (a: PolicyAgent, seconds: number, s = settings) => decide(a, at(seconds), s).flatMap((d) => (d.kind === 'act' ? [d.action] : []));

describe('policy: decisions', () => {
  it('acts at the threshold, not a moment before, counting from the last activity', () => {
    expect(acts(agent(), 1799)).to.deep.equal([]);
    expect(acts(agent(), 1800)).to.deep.equal(['stop']);
    const busy = agent({ moments: { reported: { at: at(1000), kind: 'heartbeat-busy' }, leaseEnd: null, command: null } });
    expect(acts(busy, 2799)).to.deep.equal([]);
    expect(acts(busy, 2800)).to.deep.equal(['stop']);
    const [d] = decide(busy, at(2800), settings);
    expect(d).to.include({ kind: 'act', cause: 'idle' });
    expect(d!.kind === 'act' && d!.reason).to.equal('idle 30 min since 2030-01-01T00:16:40.000Z (last activity: heartbeat-busy)');
  });

  it('takes the deepest rung due, and nothing when the agent is already there', () => {
    expect(acts(agent(), 90_000)).to.deep.equal(['hibernate']);
    expect(acts(agent({ status: 'paused', instanceStatus: 'stopped' }), 2000)).to.deep.equal([]);
    expect(acts(agent({ status: 'paused', instanceStatus: 'stopped' }), 90_000)).to.deep.equal(['hibernate']);
    expect(acts(agent({ status: 'hibernated', instanceStatus: 'hibernated' }), 900_000)).to.deep.equal([]);
  });

  it('never acts under a live lease or beside a pending operation; a lease counts until it ends', () => {
    expect(acts(agent({ leased: true, expiresAt: at(10) }), 90_000)).to.deep.equal([]);
    expect(acts(agent({ operationPending: true }), 90_000)).to.deep.equal([]);
    const released = agent({ moments: { reported: null, leaseEnd: at(5000), command: null } });
    expect(acts(released, 6799)).to.deep.equal([]);
    expect(acts(released, 6800)).to.deep.equal(['stop']);
  });

  it('destroys at expiry (before the ladder), warns once per expiry, and an expired agent under lease is held', () => {
    const expiring = agent({ idle: null, expiresAt: at(3600) });
    expect(decide(expiring, at(2999), settings)).to.deep.equal([]);
    expect(decide(expiring, at(3000), settings)).to.deep.equal([{ kind: 'warn', agentId: 'a', expiresAt: at(3600) }]);
    expect(decide({ ...expiring, expiryWarnedFor: at(3600) }, at(3000), settings)).to.deep.equal([]);
    // Extended: a new expiry is warned for again.
    expect(decide({ ...expiring, expiryWarnedFor: at(3600), expiresAt: at(7200) }, at(6600), settings).map((d) => d.kind)).to.deep.equal(['warn']);
    const expired = decide({ ...expiring, expiryWarnedFor: at(3600) }, at(3600), settings);
    expect(expired).to.have.length(1);
    expect(expired[0]).to.include({ kind: 'act', action: 'destroy', cause: 'expired', reason: 'expired at 2030-01-01T01:00:00.000Z' });
    expect(acts({ ...expiring, leased: true }, 99_999)).to.deep.equal([]);
    expect(acts(agent({ expiresAt: at(100) }), 90_000)).to.deep.equal(['destroy']);
  });

  it('backs off after its own requests failed: a minute, doubling, at most an hour; warnings go on', () => {
    const expired = agent({ idle: null, expiresAt: at(100) });
    const failing = (count: number, lastAt: number) => ({ ...expired, policyFailures: { count, lastAt: at(lastAt) } });
    expect(acts(failing(1, 1000), 1059)).to.deep.equal([]);
    expect(acts(failing(1, 1000), 1060)).to.deep.equal(['destroy']);
    expect(acts(failing(3, 1000), 1239)).to.deep.equal([]);
    expect(acts(failing(3, 1000), 1240)).to.deep.equal(['destroy']);
    expect(acts(failing(40, 1000), 4599)).to.deep.equal([]);
    expect(acts(failing(40, 1000), 4600)).to.deep.equal(['destroy']);
    expect(policyRetryAt(null)).to.equal(null);
    // The expiry warning is not held back.
    const warned = decide({ ...failing(1, 1000), expiresAt: at(1200) }, at(1010), settings);
    expect(warned.map((d) => d.kind)).to.deep.equal(['warn']);
  });

  it('hibernates a paused agent without a ladder after AUTO_HIBERNATE_AFTER_HOURS', () => {
    const s = { ...settings, autoHibernateAfterMs: 3_600_000 };
    const paused = agent({ idle: null, status: 'paused', instanceStatus: 'stopped', updatedAt: at(100) });
    expect(acts(paused, 3699, s)).to.deep.equal([]);
    expect(acts(paused, 3700, s)).to.deep.equal(['hibernate']);
    expect(acts({ ...paused, leased: true }, 9000, s)).to.deep.equal([]);
    // A stopped pool's standby waits as its pool keeps it.
    expect(acts({ ...paused, poolStandby: true }, 9000, s)).to.deep.equal([]);
  });

  it('refuses ladders that go back in time or in depth, or are too short', () => {
    expect(idleLadderSchema.safeParse([{ afterSeconds: 60, action: 'stop' }, { afterSeconds: 3600, action: 'destroy' }]).success).to.equal(true);
    const paths = (v: unknown) => (idleLadderSchema.safeParse(v).error?.issues ?? []).map((i) => i.path.join('.'));
    expect(paths([{ afterSeconds: 600, action: 'hibernate' }, { afterSeconds: 60, action: 'stop' }])).to.deep.equal(['1.afterSeconds', '1.action']);
    expect(paths([{ afterSeconds: 59, action: 'stop' }])).to.deep.equal(['0.afterSeconds']);
    expect(paths([])).to.deep.equal(['']);
  });

  it('reads its settings from the environment, every bad variable named', () => {
    expect(loadConfig(validEnv).policy).to.deep.equal({ publicUrl: null, intervalSeconds: 30, expiryWarningSeconds: 600, maxAgentLifetimeHours: null });
    expect(loadConfig({ ...validEnv, TAILFLEET_PUBLIC_URL: 'https://fleet.example.com/', MAX_AGENT_LIFETIME_HOURS: '720' }).policy).to.include({
      publicUrl: 'https://fleet.example.com',
      maxAgentLifetimeHours: 720,
    });
    const problems = problemsOf({ ...validEnv, TAILFLEET_PUBLIC_URL: "https://x/'y", POLICY_INTERVAL_SECONDS: '0', MAX_AGENT_LIFETIME_HOURS: '-1' });
    expect(problems.join('\n')).to.match(/TAILFLEET_PUBLIC_URL/).and.match(/POLICY_INTERVAL_SECONDS/).and.match(/MAX_AGENT_LIFETIME_HOURS/);
  });
});
