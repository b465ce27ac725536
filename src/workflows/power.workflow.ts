import type { AuditEntry } from '../db/ownership-finding.repository';
import { transition, transitionOf, type NewEvent, type PatchOf } from '../db/transitions';
import type { AgentStatus, Instance, InstanceStatus } from '../entities';
import { StateConflictError } from '../errors';
import type { Logger } from '../lib/logger';
import { errorMessage, guarded, move } from './guarded-moves';
import { findLiveInstanceOfAgent, finishedBy, finishTogether, reachedBy, requireInstance } from './records';
import { shutdownGuarded } from './guarded-shutdown';
import { silentReporter, type StepReporter } from './step-reporter';
import type { OperationContext, WorkflowDeps } from './workflow-deps';
import type { OwnershipGuard } from '../fleet/ownership-guard';
import { start } from '../operations/types/start';
import { stop } from '../operations/types/stop';

/**
 * Stop and start are one shape: a settled status (`running`/`stopped`) moves through a transitional
 * one to the other settled status by one Hetzner call, and the agent follows (`active`/`paused`).
 * The statuses and the refusal are the operation descriptor's (src/operations/types), written once
 * there; each direction adds its words, and the steps are the same code.
 */
interface PowerDirection extends PowerStatuses {
  operation: 'stop' | 'start';
  requested: string;
  resuming: string;
  preparing: string;
  callStep: string;
  callMessage: (serverId: number) => string;
  finishing: string;
  /** The instance's move reason for the call's result. */
  moved: (result: string) => string;
  patch: () => PatchOf<'instance'>;
  agentReason: string;
  done: string;
  already: string;
  alreadyLog: string;
  succeededLog: string;
}

interface PowerStatuses {
  from: InstanceStatus;
  via: InstanceStatus;
  to: InstanceStatus;
  agentFrom: AgentStatus;
  agentTo: AgentStatus;
  refused: string;
}

/** A reversible descriptor's statuses: its command's settled status, the transitional one its move goes through, and where it ends. */
function statusesOf(d: typeof stop | typeof start): PowerStatuses {
  const from: InstanceStatus = d.command.from[0];
  const via = d.instance[from]![0]!;
  const to = d.instance[via]![0]!;
  const [agentFrom, agentTo] = Object.entries(d.agent)[0] as [AgentStatus, AgentStatus[]];
  return { from, via, to, agentFrom, agentTo: agentTo[0]!, refused: d.command.refusal };
}

/**
 * A direction from its descriptor's statuses and the words only it has; the rest of its words follow
 * from the statuses (`marking the instance as stopping`, `already stopped`).
 */
function direction(
  operation: PowerDirection['operation'],
  descriptor: typeof stop | typeof start,
  own: Pick<PowerDirection, 'resuming' | 'callStep' | 'callMessage' | 'moved' | 'patch'> & { past: string },
): PowerDirection {
  const statuses = statusesOf(descriptor);
  const { past, ...words } = own;
  return {
    operation,
    ...statuses,
    ...words,
    requested: `${operation} requested`,
    preparing: `marking the instance as ${statuses.via}`,
    finishing: `marking the instance as ${statuses.to}`,
    agentReason: `instance ${past}`,
    done: statuses.to,
    already: `already ${statuses.to}`,
    alreadyLog: `already ${past} by this operation`,
    succeededLog: `${past} successfully`,
  };
}

const STOP = direction('stop', stop, {
  past: 'stopped', callStep: 'shutdown', callMessage: (id) => `shutting down server ${id}`,
  resuming: '[Lifecycle] Instance already stopping, resuming the shutdown',
  moved: (result) => (result === 'already_off' ? 'server already off' : `server shut down (${result})`),
  patch: () => ({ stoppedAt: new Date(), error: null }),
});

const START = direction('start', start, {
  past: 'started', callStep: 'poweron', callMessage: (id) => `powering on server ${id}`,
  resuming: '[Lifecycle] Instance already starting, resuming the power-on',
  moved: (result) => (result === 'already_running' ? 'server already running' : 'server powered on'),
  patch: () => ({ startedAt: new Date(), stoppedAt: null, error: null }),
});

/** Stops and starts an agent's server, recording each move as a guarded transition; safe to run again. */
export class PowerWorkflow {
  private readonly guard: OwnershipGuard;

  constructor(private readonly deps: WorkflowDeps) {
    this.guard = deps.guard;
  }

  /**
   * A stop may end in a forced power-off: the guard checks the server is this agent's before any power
   * action. Its audit event is written with the stop's last moves (one statement fewer per stop).
   */
  stop(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    return this.run(STOP, agentId, ctx, r, (serverId, instance) =>
      shutdownGuarded(
        this.deps,
        this.guard,
        serverId,
        { operation: 'stop', operationId: ctx.operationId ?? null, agentId, instanceId: instance.id },
        { keepAudit: true },
      ),
    );
  }

  start(agentId: string, ctx: OperationContext = {}, r: StepReporter = silentReporter): Promise<void> {
    return this.run(START, agentId, ctx, r, async (serverId) => ({ result: await this.deps.hetzner.powerOnServer(serverId), audit: null }));
  }

  private async run(
    d: PowerDirection,
    agentId: string,
    ctx: OperationContext,
    r: StepReporter,
    call: (serverId: number, instance: Instance) => Promise<{ result: string; audit: AuditEntry | null }>,
  ): Promise<void> {
    const operationId = ctx.operationId ?? null;
    const log = this.deps.logger.child({ agentId, operationId, operation: d.operation });

    // The usual case first, in one statement: the agent's live instance moves from d.from to d.via.
    // Only when it is not in d.from is the instance read, to tell a resumed run from a refused one.
    await r.step('prepare', 10, d.preparing);
    const request = { entity: 'instance', from: [d.from], to: d.via, reason: d.requested, operationId } as const;
    let instance = (await guarded(() => transitionOf(this.deps.dataSource, { agentId }, request)))?.row;
    if (!instance) {
      const found = await findLiveInstanceOfAgent(this.deps.repositories, agentId);
      if (found?.status === d.to && (await reachedBy(this.deps.repositories, found.id, d.to, operationId))) return this.finishedElsewhere(d, agentId, r, log);
      if (found?.status === d.via) {
        log.info(d.resuming);
        instance = found;
      } else if (found?.status === d.from) {
        // Moved back into d.from between the two statements: the move by id says who won.
        ({ row: instance } = await guarded(() => transition(this.deps.dataSource, { ...request, id: found.id })));
      } else {
        throw new StateConflictError(d.refused);
      }
    }

    let result: string;
    let audit: AuditEntry | null;
    try {
      const serverId = requireServerId(instance);
      await r.step(d.callStep, 30, d.callMessage(serverId));
      ({ result, audit } = await call(serverId, instance));
    } catch (err) {
      if (await finishedBy(this.deps.repositories, instance.id, d.to, operationId)) return this.finishedElsewhere(d, agentId, r, log);
      await this.revert(instance.id, d.via, d.from, err, { operationId, reason: `${d.operation} failed` }, log);
      throw err;
    }

    await r.step('finish', 90, d.finishing);
    const moved = await finishTogether(this.deps, ctx, [
      {
        entity: 'instance',
        id: instance.id,
        from: [d.via],
        to: d.to,
        reason: d.moved(result),
        operationId,
        patch: d.patch(),
      },
      { entity: 'agent', id: agentId, from: [d.agentFrom], to: d.agentTo, reason: d.agentReason, operationId, allowSame: true },
    ], { instanceId: instance.id, status: d.to, lastStep: 'done', events: audit ? [auditEvent(audit, instance)] : [] });
    if (!moved) return this.finishedElsewhere(d, agentId, r, log);
    await r.step('done', 100, d.done);
    log.info(`[Lifecycle] Agent ${agentId} ${d.succeededLog}`);
  }

  private async finishedElsewhere(d: PowerDirection, agentId: string, r: StepReporter, log: Logger): Promise<void> {
    log.info(`[Lifecycle] Agent ${agentId} ${d.alreadyLog}`);
    await r.step('done', 100, d.already);
  }

  /**
   * Puts an instance back where the operation found it, keeping the error, so the job can retry from
   * a stable state. If another operation moved the instance meanwhile, this run lost the race and
   * says so instead of reporting the cloud error.
   */
  private async revert(
    instanceId: string,
    from: InstanceStatus,
    to: InstanceStatus,
    err: unknown,
    ctx: { operationId: string | null; reason: string },
    log: Logger,
  ): Promise<void> {
    const message = errorMessage(err);
    log.error({ err }, `[Lifecycle] ${ctx.reason}: ${message}`);
    try {
      await move(this.deps.dataSource, {
        entity: 'instance',
        id: instanceId,
        from: [from],
        to,
        reason: `${ctx.reason}: ${message}`,
        operationId: ctx.operationId,
        patch: { error: message },
      });
    } catch (moveErr) {
      if (!(moveErr instanceof StateConflictError)) throw moveErr;
      const current = await requireInstance(this.deps.repositories, instanceId);
      throw new StateConflictError(`Instance ${instanceId} is now ${current.status}; another operation took over (${message})`, {
        cause: err,
        lostRace: true,
      });
    }
  }

}

/** The guard's audit entry as an event on the instance it was for. */
function auditEvent(audit: AuditEntry, instance: Pick<Instance, 'id' | 'agentId'>): NewEvent {
  return {
    entityType: 'instance',
    entityId: instance.id,
    agentId: instance.agentId,
    fromStatus: null,
    toStatus: audit.toStatus,
    reason: audit.reason,
    operationId: audit.operationId ?? null,
  };
}

function requireServerId(instance: Instance): number {
  if (!instance.serverId) throw new StateConflictError(`Instance ${instance.id} has no server id`);
  return Number(instance.serverId);
}
