import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import { AgentRepository } from '../../src/db/agent.repository';
import {
  IllegalTransitionError,
  RecordNotFoundError,
  StateConflictError,
  TransitionConflictError,
} from '../../src/db/errors';
import {
  canTransition,
  type StatusOf,
  TRANSITIONS,
  transition,
  transitionGroup,
  transitionOf,
  type TransitionResult,
  transitionTogether,
} from '../../src/db/transitions';
import {
  AGENT_STATUSES,
  Event,
  type EventEntityType,
  INSTANCE_STATUSES,
  Instance,
  OPERATION_STATUSES,
  PROVISIONING_JOB_STATUSES,
} from '../../src/entities';
import { createTestDatabase, type TestDatabase, truncateAll } from '../helpers/db';

const TABLES: Record<EventEntityType, string> = {
  agent: 'agents',
  instance: 'instances',
  provisioning_job: 'provisioning_jobs',
  operation: 'operations',
};

const STATUSES: { [K in EventEntityType]: readonly StatusOf[K][] } = {
  agent: AGENT_STATUSES,
  instance: INSTANCE_STATUSES,
  provisioning_job: PROVISIONING_JOB_STATUSES,
  operation: OPERATION_STATUSES,
};

const ENTITIES = Object.keys(TABLES) as EventEntityType[];

describe('db: transitions', () => {
  let db: TestDatabase;
  let ds: DataSource;
  let agents: AgentRepository;
  let ids: Record<EventEntityType, string>;

  before(async () => {
    db = await createTestDatabase('transitions', { poolSize: 6 });
    ds = db.dataSource;
    agents = new AgentRepository({ dataSource: ds });
  });

  after(async () => {
    await db?.drop();
  });

  beforeEach(async () => {
    await truncateAll(ds);
    const bundle = await agents.createWithProvision({ name: 'alpha', serverType: 'cx22', image: 'ubuntu-24.04' });
    ids = {
      agent: bundle.agent.id,
      instance: bundle.instance.id,
      provisioning_job: bundle.job.id,
      operation: bundle.operation.id,
    };
  });

  /** Test set-up only: put a row in a status without going through the table. */
  async function force(entity: EventEntityType, status: string): Promise<void> {
    await ds.query(`UPDATE ${TABLES[entity]} SET status = $2 WHERE id = $1`, [ids[entity], status]);
  }

  async function statusOf(entity: EventEntityType): Promise<string> {
    const [row] = await ds.query(`SELECT status FROM ${TABLES[entity]} WHERE id = $1`, [ids[entity]]);
    return row.status;
  }

  async function eventCount(): Promise<number> {
    return ds.getRepository(Event).count();
  }

  describe('the table', () => {
    it('names every status of every entity, and only known statuses', () => {
      for (const entity of ENTITIES) {
        const table = TRANSITIONS[entity] as Record<string, readonly string[]>;
        expect(Object.keys(table).sort(), entity).to.deep.equal([...STATUSES[entity]].sort());
        for (const targets of Object.values(table)) {
          for (const to of targets) expect(STATUSES[entity] as readonly string[], entity).to.include(to);
        }
      }
    });

    it('lets an instance leave destroying only to destroyed, and never leave destroyed or failed', () => {
      expect(TRANSITIONS.instance.destroying).to.deep.equal(['destroyed']);
      expect(TRANSITIONS.instance.destroyed).to.deep.equal([]);
      expect(TRANSITIONS.instance.failed).to.deep.equal([]);
      for (const live of ['pending', 'provisioning', 'running', 'stopping', 'stopped', 'starting'] as const) {
        expect(canTransition('instance', live, 'destroying'), live).to.equal(true);
      }
    });
  });

  describe('every allowed move', () => {
    for (const entity of ENTITIES) {
      const table = TRANSITIONS[entity] as Record<string, readonly string[]>;
      const moves = Object.entries(table).flatMap(([from, tos]) => tos.map((to) => [from, to] as const));
      it(`${entity}: ${moves.length} moves each write exactly one event with from, to, reason and operation`, async () => {
        for (const [from, to] of moves) {
          await force(entity, from);
          const before = await eventCount();
          const reason = `test ${from} → ${to}`;
          const result = (await transition(ds, {
            entity,
            id: ids[entity],
            from: [from as never],
            to: to as never,
            reason,
            operationId: ids.operation,
          })) as TransitionResult;
          expect(result.changed, `${from}→${to}`).to.equal(true);
          expect(result.from).to.equal(from);
          expect((result.row as { status: string }).status).to.equal(to);
          expect(await statusOf(entity)).to.equal(to);

          const events = await ds.getRepository(Event).find({ order: { id: 'DESC' }, take: 2 });
          expect(await eventCount(), `${from}→${to} event count`).to.equal(before + 1);
          expect(events[0]).to.include({
            entityType: entity,
            entityId: ids[entity],
            agentId: ids.agent,
            fromStatus: from,
            toStatus: to,
            reason,
            operationId: ids.operation,
          });
        }
      });
    }
  });

  describe('moves not in the table', () => {
    for (const entity of ENTITIES) {
      it(`${entity}: rejected as programming errors before touching the row`, async () => {
        const statuses = STATUSES[entity] as readonly string[];
        const current = await statusOf(entity);
        const before = await eventCount();
        let rejected = 0;
        for (const from of statuses) {
          for (const to of statuses) {
            if (canTransition(entity, from as never, to as never)) continue;
            const attempt = transition(ds, { entity, id: ids[entity], from: [from as never], to: to as never, reason: 'x' });
            const err = await attempt.then(
              () => null,
              (e: unknown) => e,
            );
            expect(err, `${entity} ${from}→${to}`).to.be.instanceOf(IllegalTransitionError);
            rejected++;
          }
        }
        expect(rejected).to.be.greaterThan(statuses.length); // at least every self-move
        expect(await statusOf(entity)).to.equal(current);
        expect(await eventCount()).to.equal(before);
      });
    }

    it('also when only one of several from-statuses is not allowed', async () => {
      await force('instance', 'running');
      const err = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['running', 'destroying'],
        to: 'stopping',
        reason: 'stop',
      }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(IllegalTransitionError);
      expect((err as Error).message).to.contain('destroying → stopping');
      expect(await statusOf('instance')).to.equal('running');
    });

    it('rejects a column the transition may not set, an empty from list and a blank reason', async () => {
      await force('instance', 'running');
      const bad = [
        { from: ['running'], patch: { agentId: ids.agent } as never, reason: 'stop' },
        { from: [], reason: 'stop' },
        { from: ['running'], reason: '  ' },
      ];
      for (const b of bad) {
        const err = await transition(ds, {
          entity: 'instance',
          id: ids.instance,
          from: b.from as never,
          to: 'stopping',
          reason: b.reason,
          patch: b.patch,
        }).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(IllegalTransitionError);
      }
      expect(await statusOf('instance')).to.equal('running');
    });
  });

  describe('guarded update', () => {
    it('throws TransitionConflictError with the status found when the row moved underneath', async () => {
      await force('instance', 'destroying');
      const before = await eventCount();
      const err = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['running'],
        to: 'stopping',
        reason: 'stop requested',
      }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(TransitionConflictError);
      expect(err).to.be.instanceOf(StateConflictError);
      expect(err).to.include({ entity: 'instance', id: ids.instance, actual: 'destroying', to: 'stopping' });
      expect((err as TransitionConflictError).expected).to.deep.equal(['running']);
      expect(await statusOf('instance')).to.equal('destroying');
      expect(await eventCount()).to.equal(before);
    });

    it('records which of several allowed statuses the row left', async () => {
      await force('instance', 'stopped');
      const result = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['running', 'stopping', 'stopped', 'starting'],
        to: 'destroying',
        reason: 'destroy requested',
      });
      expect(result.from).to.equal('stopped');
      const [event] = await ds.getRepository(Event).find({ order: { id: 'DESC' }, take: 1 });
      expect(event).to.include({ fromStatus: 'stopped', toStatus: 'destroying', operationId: null });
    });

    it('applies the patch with the status (undefined keys left alone), and bumps updated_at', async () => {
      await force('instance', 'provisioning');
      await ds.query(`UPDATE instances SET server_name = 'kept' WHERE id = $1`, [ids.instance]);
      const [{ updated_at: before }] = await ds.query(`SELECT updated_at FROM instances WHERE id = $1`, [ids.instance]);
      const startedAt = new Date('2026-01-02T03:04:05.678Z');
      const { row } = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['provisioning'],
        to: 'running',
        reason: 'enrolled',
        patch: { startedAt, tailscaleIp: '100.64.0.7', tailscaleDeviceId: 'dev-1', error: null, serverName: undefined },
      });
      expect(row).to.be.instanceOf(Instance);
      expect(row.startedAt?.toISOString()).to.equal(startedAt.toISOString());
      const fresh = await ds.getRepository(Instance).findOneByOrFail({ id: ids.instance });
      expect(fresh).to.include({ status: 'running', tailscaleIp: '100.64.0.7', tailscaleDeviceId: 'dev-1' });
      expect(fresh.serverName, 'undefined leaves a column alone').to.equal('kept');
      expect(fresh.startedAt?.toISOString()).to.equal(startedAt.toISOString());
      expect(fresh.updatedAt.getTime()).to.be.greaterThan(new Date(before).getTime());
    });

    it('sets patchIfNull columns only where they are still null', async () => {
      const first = new Date('2026-01-02T03:04:05.678Z');
      const later = new Date('2026-02-03T04:05:06.789Z');
      await force('instance', 'stopped');
      await ds.query(`UPDATE instances SET started_at = NULL, stopped_at = $2 WHERE id = $1`, [ids.instance, first]);
      const { row } = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['stopped'],
        to: 'starting',
        reason: 'start requested',
        patchIfNull: { startedAt: first, stoppedAt: later },
      });
      expect(row.startedAt?.toISOString(), 'null column set').to.equal(first.toISOString());
      expect(row.stoppedAt?.toISOString(), 'existing value kept').to.equal(first.toISOString());

      const err = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['starting'],
        to: 'running',
        reason: 'x',
        patchIfNull: { agentId: ids.agent } as never,
      }).catch((e: unknown) => e);
      expect(err, 'a column a transition may not set').to.be.instanceOf(IllegalTransitionError);
    });

    it('with allowSame treats "already there" as done: no conflict, no second event, patch not applied', async () => {
      await force('instance', 'stopping');
      const before = await eventCount();
      const result = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['running'],
        to: 'stopping',
        reason: 'stop requested again',
        patch: { error: 'should not be written' },
        allowSame: true,
      });
      expect(result).to.include({ changed: false, from: 'stopping' });
      expect(result.row.status).to.equal('stopping');
      expect(result.row.error).to.equal(null);
      expect(await eventCount()).to.equal(before);

      const err = await transition(ds, {
        entity: 'instance',
        id: ids.instance,
        from: ['running'],
        to: 'stopping',
        reason: 'stop requested again',
      }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(TransitionConflictError);
    });

    it('throws RecordNotFoundError for an unknown or malformed id', async () => {
      for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid']) {
        const err = await transition(ds, { entity: 'agent', id, from: ['draft'], to: 'provisioning', reason: 'x' }).catch(
          (e: unknown) => e,
        );
        expect(err, id).to.be.instanceOf(RecordNotFoundError);
      }
    });
  });

  describe('transactions', () => {
    it("runs in the caller's transaction: a rollback undoes both the status and the event", async () => {
      await force('agent', 'active');
      const before = await eventCount();
      const err = await ds
        .transaction(async (manager) => {
          await transition(manager, { entity: 'agent', id: ids.agent, from: ['active'], to: 'paused', reason: 'stop' });
          expect(
            (await manager.query(`SELECT status FROM agents WHERE id = $1`, [ids.agent]))[0].status,
          ).to.equal('paused');
          throw new Error('later step failed');
        })
        .catch((e: unknown) => e);
      expect((err as Error).message).to.equal('later step failed');
      expect(await statusOf('agent')).to.equal('active');
      expect(await eventCount()).to.equal(before);
    });

    it('groups moves all-or-nothing: a conflict on the second undoes the first', async () => {
      await force('instance', 'stopping');
      await force('agent', 'error');
      const before = await eventCount();
      const err = await transitionGroup(ds, [
        { entity: 'instance', id: ids.instance, from: ['stopping'], to: 'stopped', reason: 'server off' },
        { entity: 'agent', id: ids.agent, from: ['active'], to: 'paused', reason: 'server off' },
      ]).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(TransitionConflictError);
      expect(err).to.include({ entity: 'agent', actual: 'error' });
      expect(await statusOf('instance')).to.equal('stopping');
      expect(await eventCount()).to.equal(before);
    });

    it('groups moves and returns each result in order', async () => {
      await force('instance', 'stopping');
      await force('agent', 'active');
      const [instance, agent] = await transitionGroup(ds, [
        { entity: 'instance', id: ids.instance, from: ['stopping'], to: 'stopped', reason: 'server off' },
        { entity: 'agent', id: ids.agent, from: ['active'], to: 'paused', reason: 'server off', allowSame: true },
      ] as const);
      expect(instance.row.status).to.equal('stopped');
      expect(agent.row.status).to.equal('paused');
      expect(agent.row.name).to.equal('alpha');
    });

    it("uses a savepoint inside the caller's transaction, so the caller can carry on after a conflict", async () => {
      await force('instance', 'stopping');
      await force('agent', 'error');
      await ds.transaction(async (manager) => {
        const err = await transitionGroup(manager, [
          { entity: 'instance', id: ids.instance, from: ['stopping'], to: 'stopped', reason: 'server off' },
          { entity: 'agent', id: ids.agent, from: ['active'], to: 'paused', reason: 'server off' },
        ]).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(TransitionConflictError);
        await transition(manager, {
          entity: 'instance',
          id: ids.instance,
          from: ['stopping'],
          to: 'running',
          reason: 'stop abandoned',
        });
      });
      expect(await statusOf('instance')).to.equal('running');
      expect(await statusOf('agent')).to.equal('error');
    });
  });

  describe('transitionTogether', () => {
    const stopMoves = (agentFrom: 'active' | 'paused' = 'active') =>
      [
        {
          entity: 'instance',
          id: ids.instance,
          from: ['stopping'],
          to: 'stopped',
          reason: 'server shut down',
          operationId: ids.operation,
          patch: { error: null, stoppedAt: new Date('2026-03-04T05:06:07.000Z') },
        },
        { entity: 'agent', id: ids.agent, from: [agentFrom], to: 'paused', reason: 'instance stopped', operationId: ids.operation, allowSame: true },
      ] as const;

    it('moves several rows in one statement, with their patches and events, in order', async () => {
      await force('instance', 'stopping');
      await force('agent', 'active');
      const before = await eventCount();
      const outcomes = await transitionTogether(ds, stopMoves());
      expect(outcomes).to.deep.equal([
        { changed: true, from: 'stopping' },
        { changed: true, from: 'active' },
      ]);
      expect(await statusOf('instance')).to.equal('stopped');
      expect(await statusOf('agent')).to.equal('paused');
      const instance = await ds.getRepository(Instance).findOneByOrFail({ id: ids.instance });
      expect(instance.stoppedAt?.toISOString()).to.equal('2026-03-04T05:06:07.000Z');
      const events = await ds.getRepository(Event).find({ order: { id: 'DESC' }, take: 2 });
      expect(events.map((e) => [e.entityType, e.entityId, e.fromStatus, e.toStatus, e.reason, e.operationId, e.agentId]).sort()).to.deep.equal(
        [
          ['agent', ids.agent, 'active', 'paused', 'instance stopped', ids.operation, ids.agent],
          ['instance', ids.instance, 'stopping', 'stopped', 'server shut down', ids.operation, ids.agent],
        ].sort(),
      );
      expect(await eventCount()).to.equal(before + 2);
    });

    it('leaves a row already in its target alone under allowSame: no event, patch not applied', async () => {
      await force('instance', 'stopping');
      await force('agent', 'paused');
      const before = await eventCount();
      const outcomes = await transitionTogether(ds, stopMoves());
      expect(outcomes).to.deep.equal([
        { changed: true, from: 'stopping' },
        { changed: false, from: 'paused' },
      ]);
      expect(await eventCount()).to.equal(before + 1);
    });

    it('writes nothing when a later guard refuses, and names that move', async () => {
      await force('instance', 'stopping');
      await force('agent', 'error');
      const before = await eventCount();
      const err = await transitionTogether(ds, stopMoves()).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(TransitionConflictError);
      expect(err).to.include({ entity: 'agent', id: ids.agent, actual: 'error', to: 'paused' });
      expect(await statusOf('instance'), 'the first move is not made either').to.equal('stopping');
      expect(await eventCount()).to.equal(before);

      await force('instance', 'running');
      const first = await transitionTogether(ds, stopMoves()).catch((e: unknown) => e);
      expect(first).to.include({ entity: 'instance', actual: 'running' });
    });

    it('throws RecordNotFoundError for a missing row and refuses to move one row twice', async () => {
      await force('instance', 'stopping');
      const [instanceMove] = stopMoves();
      const missing = '00000000-0000-4000-8000-000000000000';
      const err = await transitionTogether(ds, [instanceMove, { entity: 'agent', id: missing, from: ['active'], to: 'paused', reason: 'x' }]).catch(
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(RecordNotFoundError);
      expect(await statusOf('instance')).to.equal('stopping');
      const twice = await transitionTogether(ds, [instanceMove, instanceMove]).catch((e: unknown) => e);
      expect(twice).to.be.instanceOf(Error).and.not.instanceOf(StateConflictError);
    });

    it('runs in the caller’s transaction: a rollback undoes the moves and their events', async () => {
      await force('instance', 'stopping');
      await force('agent', 'active');
      const before = await eventCount();
      await ds
        .transaction(async (m) => {
          await transitionTogether(m, stopMoves());
          throw new Error('roll back');
        })
        .catch(() => undefined);
      expect(await statusOf('instance')).to.equal('stopping');
      expect(await statusOf('agent')).to.equal('active');
      expect(await eventCount()).to.equal(before);
    });

    it('lets exactly one of two simultaneous groups from the same statuses win, 30 rounds', async () => {
      for (let round = 0; round < 30; round++) {
        await force('instance', 'stopping');
        await force('agent', 'active');
        const before = await eventCount();
        const outcomes = await Promise.allSettled([
          transitionTogether(ds, stopMoves()),
          transitionTogether(ds, [
            { entity: 'instance', id: ids.instance, from: ['stopping'], to: 'destroying', reason: `race ${round}` },
            { entity: 'agent', id: ids.agent, from: ['active'], to: 'destroyed', reason: `race ${round}` },
          ]),
        ]);
        const won = outcomes.filter((o) => o.status === 'fulfilled');
        expect(won, `round ${round}`).to.have.length(1);
        const lost = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected')!;
        expect(lost.reason, `round ${round}`).to.be.instanceOf(TransitionConflictError);
        expect(await eventCount(), `round ${round}`).to.equal(before + 2);
        const pair = [await statusOf('instance'), await statusOf('agent')];
        expect([['stopped', 'paused'], ['destroying', 'destroyed']], `round ${round}`).to.deep.include(pair);
      }
    });
  });

  describe('transitionOf: the agent\'s live instance, without its id', () => {
    const stop = { entity: 'instance', from: ['running'], to: 'stopping', reason: 'stop requested' } as const;

    it('moves the live instance and writes its event, in one statement', async () => {
      await force('instance', 'running');
      const before = await eventCount();
      const moved = await transitionOf(ds, { agentId: ids.agent }, { ...stop, operationId: ids.operation });
      expect(moved?.row.id).to.equal(ids.instance);
      expect(moved).to.include({ changed: true, from: 'running' });
      expect(moved?.row.status).to.equal('stopping');
      expect(await eventCount()).to.equal(before + 1);
      const [event] = await ds.getRepository(Event).find({ order: { id: 'DESC' }, take: 1 });
      expect([event!.entityId, event!.fromStatus, event!.toStatus, event!.operationId]).to.deep.equal([ids.instance, 'running', 'stopping', ids.operation]);
    });

    it('answers null and changes nothing when the instance is elsewhere, the agent has none or the id is not one', async () => {
      await force('instance', 'stopped');
      const before = await eventCount();
      expect(await transitionOf(ds, { agentId: ids.agent }, stop)).to.equal(null);
      expect(await statusOf('instance')).to.equal('stopped');
      expect(await transitionOf(ds, { agentId: '00000000-0000-4000-8000-000000000000' }, stop)).to.equal(null);
      expect(await transitionOf(ds, { agentId: 'not-a-uuid' }, stop)).to.equal(null);
      expect(await eventCount()).to.equal(before);
    });

    it('moves the live instance, never a dead one of the same agent', async () => {
      await force('instance', 'failed');
      await force('agent', 'error');
      const again = await agents.provisionAgain(ids.agent, { serverType: 'cx22', image: 'ubuntu-24.04' });
      await ds.query(`UPDATE instances SET status = 'running' WHERE id = $1`, [again.instance.id]);
      const moved = await transitionOf(ds, { agentId: ids.agent }, stop);
      expect(moved?.row.id).to.equal(again.instance.id);
      expect(await statusOf('instance')).to.equal('failed');
    });

    it('refuses a move not in the table before touching a row', async () => {
      await force('instance', 'running');
      const err = await transitionOf(ds, { agentId: ids.agent }, { ...stop, to: 'hibernated' }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(IllegalTransitionError);
      expect(await statusOf('instance')).to.equal('running');
    });
  });

  describe('concurrency', () => {
    it('lets exactly one of two simultaneous moves from the same status win, 50 rounds', async () => {
      const wins = { stopping: 0, destroying: 0 };
      for (let round = 0; round < 50; round++) {
        await force('instance', 'running');
        const before = await eventCount();
        const targets = round % 2 === 0 ? (['stopping', 'destroying'] as const) : (['destroying', 'stopping'] as const);
        const outcomes = await Promise.allSettled(
          targets.map((to) =>
            transition(ds, { entity: 'instance', id: ids.instance, from: ['running'], to, reason: `race ${round}` }),
          ),
        );
        const won = outcomes.filter((o) => o.status === 'fulfilled');
        const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
        expect(won, `round ${round}`).to.have.length(1);
        expect(lost, `round ${round}`).to.have.length(1);
        const winner = (won[0] as PromiseFulfilledResult<TransitionResult<'instance'>>).value.row.status;
        expect(lost[0]!.reason).to.be.instanceOf(TransitionConflictError);
        expect(lost[0]!.reason).to.include({ actual: winner, expected: lost[0]!.reason.expected });
        expect(await statusOf('instance')).to.equal(winner);
        expect(await eventCount()).to.equal(before + 1);
        wins[winner as 'stopping' | 'destroying']++;
      }
      expect(wins.stopping + wins.destroying).to.equal(50);
    });

    it('makes the later of two overlapping transactions wait for the row and then conflict', async () => {
      for (let round = 0; round < 10; round++) {
        await force('instance', 'running');
        const before = await eventCount();
        const attempt = (to: 'stopping' | 'destroying') =>
          ds.transaction(async (manager) => {
            const result = await transition(manager, {
              entity: 'instance',
              id: ids.instance,
              from: ['running'],
              to,
              reason: `overlap ${round}`,
            });
            // Keep the row locked so the other transaction is certainly waiting on it.
            await manager.query(`SELECT pg_sleep(0.02)`);
            return result;
          });
        const outcomes = await Promise.allSettled([attempt('stopping'), attempt('destroying')]);
        const won = outcomes.filter((o) => o.status === 'fulfilled');
        const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
        expect(won, `round ${round}`).to.have.length(1);
        expect(lost[0]?.reason, `round ${round}`).to.be.instanceOf(TransitionConflictError);
        expect(await eventCount()).to.equal(before + 1);
      }
    });
  });
});
