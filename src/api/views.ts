import { createHash } from 'node:crypto';
import type { Response } from 'express';
import { SYSTEM_ACTOR, type Agent, type AgentLease, type AgentSpec, type ApiToken, type Event, type Instance, type Operation, type ProvisioningJob } from '../entities';
import type { LastActivity } from '../db/activity.repository';
import { isReady } from '../policy/ready';
import type { QueueJobInfo } from '../operations/read-models';
import { clientIdempotencyKey, type CreateAgentResult } from '../operations/requests';
import type { z } from 'zod';
import { principalOf, scopeAllows } from './auth';
import type {
  agentCreatedSchema,
  agentSchema,
  agentSpecSchema,
  commandAcceptedSchema,
  eventSchema,
  instanceSchema,
  leaseSchema,
  operationSchema,
  provisioningJobSchema,
  queueJobSchema,
  tokenSchema,
} from './schemas';

/**
 * What a view returns: the output of its response schema, where a date-time (`at`, `…At`) may still
 * be a Date (JSON writes it as the ISO string the schema describes). A view that drifts from its
 * schema does not compile.
 */
export type ViewOf<S extends z.ZodType> = WithDates<z.output<S>>;
type WithDates<T> = T extends readonly (infer E)[]
  ? WithDates<E>[]
  : T extends object
    ? { [K in keyof T]: K extends 'at' | `${string}At` ? DateOr<T[K]> : WithDates<T[K]> }
    : T;
type DateOr<T> = T extends string ? T | Date : T;

/**
 * What the API shows of each row. Explicit mappers (rather than serialising entities) keep internal
 * columns and relation objects out of responses and make the wire format a deliberate choice.
 */

export const links = {
  agent: (id: string) => `/v1/agents/${id}`,
  events: (agentId: string) => `/v1/agents/${agentId}/events`,
  operation: (id: string) => `/v1/operations/${id}`,
};

/** What the caller of a request may see beyond the rows' plain columns. */
export interface Viewer {
  /** An agent's user data may carry credentials of the application: admin scope only. */
  seesUserData: boolean;
}

export function viewerOf(res: Response): Viewer {
  const principal = principalOf(res);
  return { seesUserData: principal !== undefined && scopeAllows(principal.scope, 'admin') };
}

/** The spec; user data as text only for an admin, as its size and SHA-256 for everyone (enough to tell two apart). */
export function agentSpecView(spec: AgentSpec, viewer: Viewer): ViewOf<typeof agentSpecSchema> {
  const { userData } = spec;
  return {
    serverType: spec.serverType,
    location: spec.location,
    image: spec.image,
    sshKeys: spec.sshKeys,
    placements: spec.placements ?? [{ location: spec.location, serverType: spec.serverType }],
    publicIpv4: spec.publicIpv4 ?? null,
    userData: viewer.seesUserData ? userData : null,
    userDataSize: userData === null ? null : Buffer.byteLength(userData, 'utf8'),
    userDataSha256: userData === null ? null : createHash('sha256').update(userData, 'utf8').digest('hex'),
    idle: spec.idle ?? null,
    reporter: spec.reporter === true,
  };
}

/** What the agent view shows beside the agent row: its live instance (for `ready`) and its last activity. */
export interface AgentViewContext {
  instance: Instance | null;
  lastActivity: LastActivity | null;
}

export function agentView(a: Agent, viewer: Viewer, ctx: AgentViewContext = { instance: null, lastActivity: null }): ViewOf<typeof agentSchema> {
  return {
    id: a.id,
    name: a.name,
    status: a.status,
    labels: a.labels ?? {},
    spec: a.spec ? agentSpecView(a.spec, viewer) : null,
    ready: isReady(a, ctx.instance),
    expiresAt: a.expiresAt,
    lastActivityAt: ctx.lastActivity?.at ?? null,
    lastActivity: ctx.lastActivity,
    bootstrap: a.bootstrapStatus && a.bootstrapAt ? { status: a.bootstrapStatus, detail: a.bootstrapDetail, at: a.bootstrapAt } : null,
    heartbeat: a.heartbeat && a.lastHeartbeatAt ? { at: a.lastHeartbeatAt, busy: a.heartbeat.busy, sessions: a.heartbeat.sessions, load: a.heartbeat.load } : null,
    createdAt: a.createdAt,
    updatedAt: a.updatedAt,
  };
}

/** A lease as shown; `live` judged at `now`. */
export function leaseView(l: AgentLease, now: Date = new Date()): ViewOf<typeof leaseSchema> {
  return {
    id: l.id,
    agentId: l.agentId,
    holder: l.holder,
    expiresAt: l.expiresAt,
    releasedAt: l.releasedAt,
    live: l.releasedAt === null && l.expiresAt.getTime() > now.getTime(),
    createdBy: l.createdBy,
    createdAt: l.createdAt,
  };
}

export function instanceView(i: Instance): ViewOf<typeof instanceSchema> {
  return {
    id: i.id,
    agentId: i.agentId,
    status: i.status,
    serverId: i.serverId,
    serverName: i.serverName,
    serverIp: i.serverIp,
    tailscaleDeviceId: i.tailscaleDeviceId,
    tailscaleIp: i.tailscaleIp,
    tailscaleHostname: i.tailscaleHostname,
    location: i.location,
    serverType: i.serverType,
    hetznerProject: i.hetznerProject ?? null,
    placementRefusals: i.placementRefusals ?? [],
    image: i.image,
    error: i.error,
    startedAt: i.startedAt,
    stoppedAt: i.stoppedAt,
    destroyedAt: i.destroyedAt,
    createdAt: i.createdAt,
    updatedAt: i.updatedAt,
  };
}

export function provisioningJobView(j: ProvisioningJob): ViewOf<typeof provisioningJobSchema> {
  return {
    id: j.id,
    agentId: j.agentId,
    instanceId: j.instanceId,
    status: j.status,
    attempts: j.attempts,
    error: j.error,
    failedStep: j.failedStep,
    startedAt: j.startedAt,
    finishedAt: j.finishedAt,
    createdAt: j.createdAt,
    updatedAt: j.updatedAt,
  };
}

/** The answer to a request that (re)provisions an agent: POST /v1/agents and .../reprovision. */
export function provisionView(result: CreateAgentResult, viewer: Viewer): ViewOf<typeof agentCreatedSchema> {
  const agentId = result.agent.id;
  return {
    agent: agentView(result.agent, viewer, { instance: result.instance, lastActivity: result.operation.requestedBy === SYSTEM_ACTOR ? null : { at: result.operation.requestedAt, kind: 'command' } }),
    instance: instanceView(result.instance),
    operation: operationView(result.operation),
    provisioningJob: provisioningJobView(result.provisioningJob),
    job: { queue: 'provision', id: result.operation.queueJobId },
    links: { self: links.agent(agentId), operation: links.operation(result.operation.id), events: links.events(agentId) },
  };
}

export function operationView(o: Operation): ViewOf<typeof operationSchema> {
  return {
    id: o.id,
    type: o.type,
    status: o.status,
    agentId: o.agentId,
    provisioningJobId: o.provisioningJobId,
    idempotencyKey: clientIdempotencyKey(o),
    queueJobId: o.queueJobId,
    attempts: o.attempts,
    progress: o.progress,
    currentStep: o.currentStep,
    error: o.error,
    failedStep: o.failedStep,
    requestedBy: o.requestedBy,
    reason: o.reason,
    requestedAt: o.requestedAt,
    startedAt: o.startedAt,
    finishedAt: o.finishedAt,
    updatedAt: o.updatedAt,
  };
}

/** A token as listed: never its secret or hash, only the prefix that tells it apart. */
export function tokenView(t: ApiToken): ViewOf<typeof tokenSchema> {
  return {
    id: t.id,
    name: t.name,
    scope: t.scope,
    tokenPrefix: t.tokenPrefix,
    createdAt: t.createdAt,
    expiresAt: t.expiresAt,
    revokedAt: t.revokedAt,
    lastUsedAt: t.lastUsedAt,
  };
}

export function eventView(e: Event): ViewOf<typeof eventSchema> {
  return {
    id: e.id,
    entityType: e.entityType,
    entityId: e.entityId,
    agentId: e.agentId,
    fromStatus: e.fromStatus,
    toStatus: e.toStatus,
    reason: e.reason,
    operationId: e.operationId,
    actor: e.actor,
    at: e.at,
  };
}

export function queueJobView(j: QueueJobInfo | null): ViewOf<typeof queueJobSchema> | null {
  if (!j) return null;
  return {
    queue: j.queue,
    id: j.id,
    state: j.state,
    ...(j.progress !== undefined ? { progress: j.progress } : {}),
    ...(j.attemptsMade !== undefined ? { attemptsMade: j.attemptsMade } : {}),
    ...(j.failedReason !== undefined ? { failedReason: j.failedReason } : {}),
    ...(j.createdAt !== undefined ? { createdAt: j.createdAt, processedAt: j.processedAt, finishedAt: j.finishedAt } : {}),
  };
}

/** Body of a 202 (or a 200 replay) for every command. */
export function commandView(operation: Operation): ViewOf<typeof commandAcceptedSchema> {
  return {
    operation: operationView(operation),
    job: { queue: operation.type, id: operation.queueJobId },
    links: {
      operation: links.operation(operation.id),
      ...(operation.agentId ? { agent: links.agent(operation.agentId) } : {}),
    },
  };
}
