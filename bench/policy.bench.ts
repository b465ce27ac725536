/**
 * The policies against random activity: an accelerated fleet of agents with idle ladders, busy
 * spans (a busy heartbeat every minute), sessions (a heartbeat with a session every minute) and
 * leases (some released early, some left to expire), over simulated hours. The policy loop itself
 * (PolicyLoop: its SQL against a scratch PostgreSQL database, its decisions) runs once every
 * POLICY_INTERVAL_SECONDS of simulated time, on a clock of the bench's. Its actions are counted and
 * applied to the rows (instance stopped, hibernated, destroyed) instead of being executed against the
 * cloud, which would take the hours the bench compresses; an agent whose work comes back while it is
 * stopped or hibernated is started again by its user, which counts as activity (a command).
 *
 * Every action is judged against the bench's own record of the activity (not the database's):
 * none may hit an agent that is busy, in a session or leased, nor come before its threshold; every
 * rung that falls due must be acted on within one interval of its threshold.
 *
 *   npm run bench:policy [-- --agents 500 --hours 20 --interval 30 --seed 1]
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { createDatabase, dropDatabase, scratchDatabaseName } from '../src/db/admin';
import { createDataSource } from '../src/db/data-source';
import { runMigrations } from '../src/db/migrate';
import { createRepositories } from '../src/db/repositories';
import type { IdleStep } from '../src/entities';
import { silentLogger } from '../src/lib/logger';
import { depthOf } from '../src/policy/idle-ladder';
import { PolicyLoop } from '../src/policy/policy-loop';
import { fmt, log, table, writeResult, type Row } from './lib/report';

const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** mulberry32: the same seed, the same fleet. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MIN = 60_000;
const HOUR = 60 * MIN;

type Depth = 0 | 1 | 2 | 3; // running, stopped, hibernated, destroyed

interface Span {
  kind: 'busy' | 'session';
  from: number;
  to: number;
}
interface LeaseSpan {
  id: string;
  from: number;
  expires: number;
  /** Released before it expires; null: left to expire. */
  released: number | null;
}
interface SimAgent {
  id: string;
  ladder: IdleStep[];
  spans: Span[];
  leases: LeaseSpan[];
  depth: Depth;
  /** When its user last started it again. */
  startedAt: number;
  /** Rungs already found overdue (agent id, rung, idle-since) so a miss is counted once. */
  missed: Set<string>;
}

function ladderFor(r: () => number): IdleStep[] {
  const stop = (10 + Math.floor(r() * 50)) * 60; // 10–59 min
  const presets: IdleStep[][] = [
    [{ afterSeconds: stop, action: 'stop' }],
    [
      { afterSeconds: stop, action: 'stop' },
      { afterSeconds: stop + (1 + Math.floor(r() * 3)) * 3600, action: 'hibernate' },
    ],
    [
      { afterSeconds: stop, action: 'stop' },
      { afterSeconds: stop + 2 * 3600, action: 'hibernate' },
      { afterSeconds: stop + (4 + Math.floor(r() * 6)) * 3600, action: 'destroy' },
    ],
    [{ afterSeconds: stop * 2, action: 'hibernate' }],
  ];
  return presets[Math.floor(r() * presets.length)]!;
}

/** Work comes in bursts: spans of 5–120 min separated by gaps of mean 90 min; leases now and then. */
function activityFor(r: () => number, horizon: number): { spans: Span[]; leases: LeaseSpan[] } {
  const spans: Span[] = [];
  const leases: LeaseSpan[] = [];
  for (let t = r() * 2 * HOUR; t < horizon; ) {
    const length = (5 + r() * 115) * MIN;
    const roll = r();
    if (roll < 0.25) {
      const ttl = (10 + r() * 170) * MIN;
      leases.push({ id: randomUUID(), from: t, expires: t + ttl, released: r() < 0.5 ? t + r() * ttl : null });
    } else {
      spans.push({ kind: roll < 0.65 ? 'busy' : 'session', from: t, to: Math.min(horizon, t + length) });
    }
    t += length + -Math.log(1 - r()) * 90 * MIN;
  }
  return { spans, leases };
}

/** The heartbeats of a span (one a minute from its start) falling in (from, to]. */
function heartbeatsIn(span: Span, from: number, to: number): number[] {
  const out: number[] = [];
  const first = Math.max(0, Math.ceil((from - span.from) / MIN));
  for (let k = first; ; k++) {
    const at = span.from + k * MIN;
    if (at > to || at > span.to) break;
    if (at > from) out.push(at);
  }
  return out;
}

async function main(): Promise<void> {
  const agents = arg('agents', 500);
  const hours = arg('hours', 20);
  const intervalS = arg('interval', 30);
  const seed = arg('seed', 1);
  const r = prng(seed);
  const horizon = hours * HOUR;
  const interval = intervalS * 1000;

  const database = scratchDatabaseName('bench_policy');
  const url = await createDatabase(ADMIN_URL, database);
  const dataSource = createDataSource({ url, poolSize: 4, applicationName: 'tailfleet-bench' });
  const started = Date.now();
  try {
    await dataSource.initialize();
    await runMigrations(dataSource);
    const repos = createRepositories(dataSource);
    // Simulated time 0 lies far enough back that the database's own now() never meets it.
    const t0 = Date.UTC(2020, 0, 1);
    const at = (t: number) => new Date(t0 + t);

    const fleet: SimAgent[] = [];
    for (let i = 0; i < agents; i++) {
      const { spans, leases } = activityFor(r, horizon);
      fleet.push({ id: '', ladder: ladderFor(r), spans, leases, depth: 0, startedAt: 0, missed: new Set() });
    }
    const ids: Array<{ id: string }> = await dataSource.query(
      `INSERT INTO agents (name, status, spec, created_at, updated_at)
       SELECT 'policy-' || n, 'active', jsonb_build_object('serverType', 'cx22', 'location', 'fsn1', 'image', 'ubuntu-24.04', 'sshKeys', '[]'::jsonb, 'userData', null, 'reporter', true, 'idle', l::jsonb), $2, $2
       FROM unnest($1::text[]) WITH ORDINALITY AS x(l, n) ORDER BY n RETURNING id`,
      [fleet.map((a) => JSON.stringify(a.ladder)), at(0)],
    );
    ids.forEach((row, i) => (fleet[i]!.id = row.id));
    await dataSource.query(
      `INSERT INTO instances (agent_id, status, server_type, image, location, started_at, created_at)
       SELECT id, 'running', 'cx22', 'ubuntu-24.04', 'fsn1', $2, $2 FROM unnest($1::uuid[]) AS id`,
      [fleet.map((a) => a.id), at(0)],
    );
    const byId = new Map(fleet.map((a) => [a.id, a]));

    let now = 0;
    const actions: Array<{ agent: SimAgent; action: IdleStep['action']; t: number; dueAt: number }> = [];
    const violations = { busy: 0, leased: 0, early: 0 };
    const latenessMs: number[] = [];
    let missed = 0;

    // What the bench knows (not the database): the last activity at or before t, and what holds the agent now.
    const truth = (a: SimAgent, t: number) => {
      let since = Math.max(a.startedAt, 0);
      let busy = false;
      let leased = false;
      for (const s of a.spans) {
        if (s.from > t) break;
        // Its last heartbeat at or before t: one a minute from the span's start.
        since = Math.max(since, s.from + Math.floor((Math.min(t, s.to) - s.from) / MIN) * MIN);
        if (s.from <= t && t <= s.to) busy = true;
      }
      for (const l of a.leases) {
        if (l.from > t) break;
        const end = Math.min(l.released ?? Infinity, l.expires);
        if (t < end) leased = true;
        else since = Math.max(since, end);
      }
      return { since, busy, leased };
    };

    const loop = new PolicyLoop({
      dataSource,
      activity: repos.activity,
      logger: silentLogger,
      intervalMs: interval,
      settings: { expiryWarningMs: 600_000, autoHibernateAfterMs: null, maxLifetimeHours: null },
      now: () => at(now),
      actor: {
        request: async (action, agentId) => {
          const a = byId.get(agentId)!;
          const state = truth(a, now);
          if (state.busy) violations.busy++;
          if (state.leased) violations.leased++;
          const step = a.ladder.find((s) => s.action === action)!;
          const dueAt = state.since + step.afterSeconds * 1000;
          if (dueAt > now) violations.early++;
          else latenessMs.push(now - dueAt);
          actions.push({ agent: a, action, t: now, dueAt });
          a.depth = depthOf(action) as Depth;
          // Counted, and applied to the rows as the operation would leave them.
          const [instance, agent] =
            action === 'stop' ? ['stopped', 'paused'] : action === 'hibernate' ? ['hibernated', 'hibernated'] : ['destroyed', 'destroyed'];
          await dataSource.query(`UPDATE instances SET status = $2 WHERE agent_id = $1 AND status NOT IN ('destroyed', 'failed')`, [agentId, instance]);
          await dataSource.query(`UPDATE agents SET status = $2, updated_at = $3 WHERE id = $1`, [agentId, agent, at(now)]);
          return { operationId: randomUUID() };
        },
      },
    });

    let passes = 0;
    let writes = 0;
    const passMs: number[] = [];
    for (let prev = -interval; now <= horizon; prev = now, now += interval) {
      // The activity of (prev, now], written as the API would have written it, with its own times.
      const beats: Array<[string, number, boolean, number]> = [];
      const restart: SimAgent[] = [];
      for (const a of fleet) {
        if (a.depth === 3) continue;
        for (const s of a.spans) {
          if (s.from > now) break;
          if (s.to <= prev) continue;
          for (const b of heartbeatsIn(s, prev, now)) beats.push([a.id, b, s.kind === 'busy', s.kind === 'session' ? 1 + Math.floor(r() * 3) : 0]);
          // Work for a stopped or hibernated agent: its user starts it (a command, which counts as activity).
          if (a.depth > 0 && s.from > prev && s.from <= now) restart.push(a);
        }
      }
      for (const a of restart) {
        a.depth = 0;
        a.startedAt = a.spans.find((s) => s.from > prev && s.from <= now)!.from;
        await dataSource.query(`UPDATE instances SET status = 'running', started_at = $2 WHERE agent_id = $1 AND status NOT IN ('destroyed', 'failed')`, [a.id, at(a.startedAt)]);
        await dataSource.query(`UPDATE agents SET status = 'active', updated_at = $2 WHERE id = $1`, [a.id, at(a.startedAt)]);
        writes += 2;
      }
      if (beats.length > 0) {
        // The latest of each agent's heartbeats in the window is the one that stays on its row.
        const last = new Map<string, [string, number, boolean, number]>();
        for (const b of beats) if ((last.get(b[0])?.[1] ?? -Infinity) < b[1]) last.set(b[0], b);
        const rows = [...last.values()];
        await dataSource.query(
          `UPDATE agents a SET last_heartbeat_at = v.at, heartbeat = jsonb_build_object('busy', v.busy, 'sessions', v.sessions, 'load', 0.5),
             last_activity_at = v.at, last_activity_kind = CASE WHEN v.busy THEN 'heartbeat-busy' ELSE 'session' END
           FROM unnest($1::uuid[], $2::timestamptz[], $3::boolean[], $4::int[]) AS v(id, at, busy, sessions) WHERE a.id = v.id`,
          [rows.map((b) => b[0]), rows.map((b) => at(b[1])), rows.map((b) => b[2]), rows.map((b) => b[3])],
        );
        writes++;
      }
      const newLeases = fleet.flatMap((a) => (a.depth === 3 ? [] : a.leases.filter((l) => l.from > prev && l.from <= now).map((l) => ({ a, l }))));
      if (newLeases.length > 0) {
        await dataSource.query(
          `INSERT INTO agent_leases (id, agent_id, holder, expires_at, created_at, created_by)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])`,
          [newLeases.map((x) => x.l.id), newLeases.map((x) => x.a.id), newLeases.map(() => 'bench'), newLeases.map((x) => at(x.l.expires)), newLeases.map((x) => at(x.l.from)), newLeases.map(() => 'bench')],
        );
        // A lease taken on a stopped agent comes with its user starting it.
        for (const { a, l } of newLeases) {
          if (a.depth > 0) {
            a.depth = 0;
            a.startedAt = l.from;
            await dataSource.query(`UPDATE instances SET status = 'running', started_at = $2 WHERE agent_id = $1 AND status NOT IN ('destroyed', 'failed')`, [a.id, at(l.from)]);
            await dataSource.query(`UPDATE agents SET status = 'active' WHERE id = $1`, [a.id]);
          }
        }
        writes++;
      }
      const releases = fleet.flatMap((a) => a.leases.filter((l) => l.released !== null && l.released > prev && l.released <= now));
      if (releases.length > 0) {
        await dataSource.query(`UPDATE agent_leases SET released_at = v.at FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, at) WHERE agent_leases.id = v.id`, [
          releases.map((l) => l.id),
          releases.map((l) => at(l.released!)),
        ]);
        writes++;
      }

      const t = Date.now();
      await loop.runOnce();
      passMs.push(Date.now() - t);
      passes++;

      // Every rung due more than an interval ago must have been acted on.
      for (const a of fleet) {
        if (a.depth === 3) continue;
        const state = truth(a, now);
        if (state.busy || state.leased) continue;
        for (const step of a.ladder) {
          const dueAt = state.since + step.afterSeconds * 1000;
          const key = `${step.action}@${state.since}`;
          if (dueAt + interval < now && depthOf(step.action) > a.depth && !a.missed.has(key)) {
            // A deeper rung due as well covers this one (hibernate from running, destroy from anywhere).
            const deeper = a.ladder.some((s) => depthOf(s.action) > depthOf(step.action) && state.since + s.afterSeconds * 1000 <= now - interval);
            if (!deeper) {
              a.missed.add(key);
              missed++;
            }
          }
        }
      }
      if (passes % 400 === 0) log(`simulated ${(now / HOUR).toFixed(1)} h of ${hours} h: ${actions.length} actions, ${passes} passes`);
    }

    const agentHours = agents * hours;
    const wall = Date.now() - started;
    const maxLate = latenessMs.length ? Math.max(...latenessMs) : 0;
    const sortedPass = [...passMs].sort((x, y) => x - y);
    const byAction = (name: string) => actions.filter((x) => x.action === name).length;
    const rows: Row[] = [
      { bench: 'policy', metric: 'agent-hours simulated', value: String(agentHours), target: '≥ 10000', met: agentHours >= 10_000 },
      { bench: 'policy', metric: `actions (stop / hibernate / destroy)`, value: `${byAction('stop')} / ${byAction('hibernate')} / ${byAction('destroy')}` },
      { bench: 'policy', metric: 'agents acted on while busy or in a session', value: String(violations.busy), target: '0', met: violations.busy === 0 },
      { bench: 'policy', metric: 'agents acted on while leased', value: String(violations.leased), target: '0', met: violations.leased === 0 },
      { bench: 'policy', metric: 'agents acted on before their threshold', value: String(violations.early), target: '0', met: violations.early === 0 },
      { bench: 'policy', metric: 'rungs not acted on within the interval', value: String(missed), target: '0', met: missed === 0 },
      { bench: 'policy', metric: 'max lateness after a threshold', value: fmt.s(maxLate), target: `≤ ${intervalS} s (POLICY_INTERVAL_SECONDS)`, met: maxLate <= interval },
      { bench: 'policy', metric: `policy pass over ${agents} agents (p50 / max)`, value: `${fmt.ms(sortedPass[Math.floor(sortedPass.length / 2)] ?? 0)} / ${fmt.ms(sortedPass[sortedPass.length - 1] ?? 0)}` },
      { bench: 'policy', metric: 'passes / activity writes / wall time', value: `${passes} / ${writes} / ${fmt.s(wall)}` },
    ];
    console.log(table(rows));
    writeResult('policy', { agents, hours, intervalS, seed, rows });
    if (rows.some((row) => row.met === false)) process.exitCode = 1;
  } finally {
    if (dataSource.isInitialized) await dataSource.destroy();
    await dropDatabase(ADMIN_URL, database);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
