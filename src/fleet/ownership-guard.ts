import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerServer } from '../clients/hetzner/hetzner.types';
import type { TailscaleClient } from '../clients/tailscale/tailscale.client';
import type { TailscaleDevice, TailscaleKey } from '../clients/tailscale/tailscale.types';
import type { AuditEntry, AuditSubject, NewOwnershipFinding } from '../db/ownership-finding.repository';
import type { OwnedResourceType } from '../entities/ownership-finding.entity';
import { OwnershipRefusedError } from '../errors';
import type { Logger } from '../lib/logger';
import { carriesTags, hostnameMatches } from './devices';
import type { Fleet } from './fleet';
import { AGENT_LABEL, FLEET_LABEL, JOB_LABEL, MANAGED_LABEL } from './server-labels';

/**
 * Nothing is deleted without proof that it is ours. Every destructive cloud call — server delete,
 * power-off, device delete, auth key revoke, image delete — goes through this guard, which names
 * the resource and the evidence and refuses unless two independent facts agree:
 *
 * | resource | allowed when |
 * |---|---|
 * | server   | its id was recorded by this instance AND its labels carry this agent and this fleet; or, with no recorded id, the labels alone: the agent (and job, when one is named) or for an orphan any agent/job label, this fleet, managed-by |
 * | device   | it carries the fleet's tags AND (its id was recorded OR its hostname is the agent's unique hostname); a tailnet address only ever confirms |
 * | auth key | it was recorded for this provisioning job AND its description names the job (authKeyDescription) |
 * | image    | its labels carry this agent's id AND this fleet |
 *
 * A refusal leaves the resource alone, records an open ownership finding and a `needs_attention`
 * event (what matched, what was missing), and is not an error for the caller: a teardown whose
 * resources are all refused or gone finishes. Every allowed call writes an audit event naming the
 * resource, the facts that matched and the operation, so "why was this deleted?" has an answer in
 * GET /v1/agents/:id/events.
 */

/** The event `to_status` values the guard writes (never a row's status). */
export const AUDIT_ACTIONS = [
  'server_deleted',
  'server_powered_off',
  'device_deleted',
  'auth_key_revoked',
  'image_deleted',
  'needs_attention',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface Verdict {
  ours: boolean;
  /** Facts that held, in words ("recorded id 42", "label tailfleet-agent=…"). */
  matched: string[];
  /** Facts the rule needed and did not find. */
  missing: string[];
}

export interface ServerEvidence {
  /** The agent the server must be labelled for; absent for an orphan (any agent or job label then). */
  agentId?: string;
  /** The job label the server must carry when found by it (no recorded id). */
  provisioningJobId?: string;
  /** Ids this instance recorded, or the id this attempt's create call returned. */
  recordedIds?: readonly (number | string)[];
}

export interface DeviceEvidence {
  /** Device ids the instance recorded. */
  recordedIds?: readonly string[];
  /** The agent's unique hostname (instance.tailscaleHostname or Fleet.hostname); null when it may not be used. */
  hostname?: string | null;
  /** Why the hostname is an agent's, when it is not the one an instance recorded (orphans). */
  hostnameFact?: string;
  /** The fleet's tags (TAILSCALE_TAGS): the device must carry every one. */
  tags: readonly string[];
  /** The instance's recorded tailnet address: confirms, never suffices. */
  ip?: string | null;
}

export interface AuthKeyEvidence {
  /** Keys recorded for the provisioning job. */
  recordedIds: readonly string[];
  provisioningJobId: string;
  /** The job's hostname: keys made before descriptions named the job were described `tailfleet <hostname>`. */
  hostname: string;
}

export interface ImageLike {
  id: number | string;
  description?: string | null;
  labels?: Record<string, string> | null;
}

/** Who asked and for whom: the operation name (destroy, rollback, provision, stop, reconcile, …) and its rows. */
export interface GuardContext extends AuditSubject {
  operation: string;
}

export type GuardOutcome = 'deleted' | 'already_gone' | 'refused';

export function judgeServer(fleet: Fleet, server: Pick<HetznerServer, 'id' | 'labels'>, ev: ServerEvidence): Verdict {
  const labels = server.labels ?? {};
  const matched: string[] = [];
  const missing: string[] = [];
  const label = (key: string, want: string) => {
    const have = labels[key];
    if (have === want) matched.push(`label ${key}=${want}`);
    else missing.push(`label ${key}=${want}${have === undefined ? ' (absent)' : ` (carries ${have})`}`);
  };
  label(MANAGED_LABEL.key, MANAGED_LABEL.value);
  if (labels[FLEET_LABEL] === undefined && fleet.isDefault) matched.push(`no ${FLEET_LABEL} label (fleet ${fleet.name}, from before fleets)`);
  else label(FLEET_LABEL, fleet.name);
  const recorded = (ev.recordedIds ?? []).map(String).includes(String(server.id));
  if (recorded) matched.push(`recorded id ${server.id}`);
  if (ev.agentId) label(AGENT_LABEL, ev.agentId);
  if (ev.provisioningJobId && !recorded) label(JOB_LABEL, ev.provisioningJobId);
  if (!ev.agentId && !ev.provisioningJobId) {
    // An orphan: no agent to compare with, but tailfleet labels every server it makes with its agent and job.
    const made = [AGENT_LABEL, JOB_LABEL].filter((k) => labels[k] !== undefined);
    if (made.length > 0) matched.push(...made.map((k) => `label ${k}=${labels[k]}`));
    else missing.push(`label ${AGENT_LABEL} or ${JOB_LABEL} (absent)`);
  }
  return { ours: missing.length === 0, matched, missing };
}

export function judgeDevice(device: Pick<TailscaleDevice, 'id' | 'hostname' | 'name' | 'tags' | 'addresses'>, ev: DeviceEvidence): Verdict {
  const matched: string[] = [];
  const missing: string[] = [];
  const have = device.tags ?? [];
  const tagged = carriesTags(device, ev.tags);
  if (tagged) matched.push(`tags ${ev.tags.join(',')}`);
  else missing.push(`tags ${ev.tags.join(',') || '(none configured)'} (carries ${have.join(',') || 'none'})`);
  const recorded = (ev.recordedIds ?? []).includes(device.id);
  if (recorded) matched.push(`recorded id ${device.id}`);
  const named = !!ev.hostname && hostnameMatches(device, ev.hostname);
  if (named) matched.push(ev.hostnameFact ?? `hostname ${ev.hostname}`);
  if (!recorded && !named) {
    const ids = (ev.recordedIds ?? []).filter(Boolean);
    missing.push(ids.length > 0 ? `recorded id ${ids.join(',')} (device is ${device.id})` : 'a recorded device id (none recorded)');
    missing.push(ev.hostname ? `hostname ${ev.hostname} (device is ${device.hostname})` : `the agent's hostname (device is ${device.hostname})`);
  }
  if (ev.ip && (device.addresses ?? []).includes(ev.ip)) matched.push(`tailnet address ${ev.ip} (confirms only)`);
  return { ours: tagged && (recorded || named), matched, missing };
}

const KEY_DESCRIPTION_MAX = 50;
const KEY_HOSTNAME_ROOM = 20;
const JOB_MARK_LENGTH = 12;

/** The first 12 hex digits of the provisioning job id: what a key's description names the job by. */
function jobMark(provisioningJobId: string): string {
  return provisioningJobId.replace(/[^0-9a-fA-F]/g, '').toLowerCase().slice(0, JOB_MARK_LENGTH);
}

/**
 * The description of every auth key tailfleet creates: `tailfleet <hostname, cut to 20> <first 12
 * hex of the job id> <nonce>`, at most 50 characters of letters, digits, spaces and hyphens
 * (Tailscale's limit). The job mark finds a job's keys, also those whose create answer was lost;
 * the nonce, new for each mint, tells one attempt's keys from a parallel attempt's of the same job.
 */
export function authKeyDescription(o: { hostname: string; provisioningJobId: string; nonce: string }): string {
  const description = `tailfleet ${o.hostname.slice(0, KEY_HOSTNAME_ROOM)} ${jobMark(o.provisioningJobId)} ${o.nonce}`;
  if (description.length > KEY_DESCRIPTION_MAX || !/^[A-Za-z0-9 -]+$/.test(description)) {
    throw new Error(`Auth key description ${JSON.stringify(description)} breaks Tailscale's rules`);
  }
  return description;
}

/** Whether the description is one authKeyDescription gave a key of this job. */
export function describesJob(description: string | undefined, provisioningJobId: string): boolean {
  const parts = (description ?? '').split(' ');
  return parts.length === 4 && parts[0] === 'tailfleet' && parts[2] === jobMark(provisioningJobId);
}

export function judgeAuthKey(key: Pick<TailscaleKey, 'id' | 'description'>, ev: AuthKeyEvidence): Verdict {
  const matched: string[] = [];
  const missing: string[] = [];
  if (ev.recordedIds.includes(key.id)) matched.push(`recorded for provisioning job ${ev.provisioningJobId}`);
  else missing.push(`recorded for provisioning job ${ev.provisioningJobId}`);
  // Keys made before descriptions named the job carry `tailfleet <hostname>`.
  const legacy = `tailfleet ${ev.hostname}`.slice(0, KEY_DESCRIPTION_MAX);
  if (describesJob(key.description, ev.provisioningJobId)) matched.push(`description "${key.description}" names the job`);
  else if (key.description === legacy) matched.push(`description "${legacy}"`);
  else missing.push(`description naming job ${ev.provisioningJobId} (has "${key.description ?? ''}")`);
  return { ours: missing.length === 0, matched, missing };
}

/**
 * An image (a hibernated agent's snapshot) may be deleted only when its labels carry this agent's
 * id and this fleet's name. Images came after fleets, so there is no unlabelled legacy case.
 */
export function guardImageDelete(image: ImageLike, agentId: string, fleet: Fleet): Verdict {
  const labels = image.labels ?? {};
  const matched: string[] = [];
  const missing: string[] = [];
  for (const [key, want] of [
    [AGENT_LABEL, agentId],
    [FLEET_LABEL, fleet.name],
  ] as const) {
    const have = labels[key];
    if (have === want) matched.push(`label ${key}=${want}`);
    else missing.push(`label ${key}=${want}${have === undefined ? ' (absent)' : ` (carries ${have})`}`);
  }
  if (labels[MANAGED_LABEL.key] === MANAGED_LABEL.value) matched.push(`label ${MANAGED_LABEL.key}=${MANAGED_LABEL.value}`);
  return { ours: missing.length === 0, matched, missing };
}

/**
 * A hostname only tailfleet gives: `<slug>-<8 hex>--<this fleet's code>`, or for the default fleet
 * also the form from before fleets, `<slug>-<8 hex>`.
 */
export function isAgentHostname(fleet: Fleet, hostname: string | null | undefined): boolean {
  const h = (hostname ?? '').toLowerCase();
  if (new RegExp(`^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}--${fleet.code}$`).test(h)) return true;
  return fleet.isDefault && /^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}$/.test(h);
}

/** Where the guard writes: the findings repository (src/db/ownership-finding.repository.ts). */
export interface OwnershipAudit {
  recordAudit(entry: AuditSubject & { toStatus: string; reason: string }): Promise<void>;
  recordRefusal(finding: NewOwnershipFinding, reason: string): Promise<unknown>;
}

export interface OwnershipGuardDeps {
  hetzner: Pick<HetznerClient, 'deleteServer'>;
  tailscale: Pick<TailscaleClient, 'deleteDevice' | 'getAuthKey' | 'deleteAuthKey'>;
  fleet: Fleet;
  audit: OwnershipAudit;
  logger: Logger;
}

interface Resource {
  type: OwnedResourceType;
  id: string;
  name: string | null;
}

export class OwnershipGuard {
  constructor(private readonly deps: OwnershipGuardDeps) {}

  get fleet(): Fleet {
    return this.deps.fleet;
  }

  async deleteServer(server: Pick<HetznerServer, 'id' | 'name' | 'labels'>, ev: ServerEvidence, ctx: GuardContext): Promise<GuardOutcome> {
    const resource: Resource = { type: 'server', id: String(server.id), name: server.name ?? null };
    const verdict = judgeServer(this.deps.fleet, server, ev);
    if (!verdict.ours) return this.refuse(resource, 'delete', verdict, ctx);
    const deleted = await this.deps.hetzner.deleteServer(server.id);
    if (deleted) await this.allowed(resource, 'server_deleted', 'deleted', verdict, ctx);
    return deleted ? 'deleted' : 'already_gone';
  }

  async deleteDevice(device: TailscaleDevice, ev: DeviceEvidence, ctx: GuardContext): Promise<GuardOutcome> {
    const resource: Resource = { type: 'device', id: device.id, name: device.hostname ?? null };
    const verdict = judgeDevice(device, ev);
    if (!verdict.ours) return this.refuse(resource, 'delete', verdict, ctx);
    const deleted = await this.deps.tailscale.deleteDevice(device.id);
    if (deleted) await this.allowed(resource, 'device_deleted', 'deleted', verdict, ctx);
    return deleted ? 'deleted' : 'already_gone';
  }

  /**
   * An enrolment found a device under the agent's hostname: one that fails the device rule (it lacks
   * the fleet's tags) is not accepted as the agent's, and is recorded as a finding. Deletes nothing.
   */
  async checkEnrolledDevice(device: TailscaleDevice, ev: DeviceEvidence, ctx: GuardContext): Promise<Verdict> {
    const verdict = judgeDevice(device, ev);
    if (!verdict.ours) await this.refuse({ type: 'device', id: device.id, name: device.hostname ?? null }, 'accept', verdict, ctx);
    return verdict;
  }

  /** Reads the key (its description is the second fact), then revokes it. */
  async revokeAuthKey(keyId: string, ev: AuthKeyEvidence, ctx: GuardContext): Promise<GuardOutcome> {
    const key = await this.deps.tailscale.getAuthKey(keyId);
    if (!key || key.revoked || key.invalid) return 'already_gone';
    const resource: Resource = { type: 'auth_key', id: keyId, name: key.description ?? null };
    const verdict = judgeAuthKey(key, ev);
    if (!verdict.ours) return this.refuse(resource, 'revoke', verdict, ctx);
    const revoked = await this.deps.tailscale.deleteAuthKey(keyId);
    if (revoked) await this.allowed(resource, 'auth_key_revoked', 'revoked', verdict, ctx);
    return revoked ? 'deleted' : 'already_gone';
  }

  /**
   * For hibernate's snapshot images: judged by guardImageDelete, deleted by `remove` (the Hetzner
   * image delete; true when it deleted, false when the image was already gone).
   */
  async deleteImage(image: ImageLike, agentId: string, ctx: GuardContext, remove: () => Promise<boolean>): Promise<GuardOutcome> {
    const resource: Resource = { type: 'image', id: String(image.id), name: image.description ?? null };
    const verdict = guardImageDelete(image, agentId, this.deps.fleet);
    if (!verdict.ours) return this.refuse(resource, 'delete', verdict, ctx);
    const deleted = await remove();
    if (deleted) await this.allowed(resource, 'image_deleted', 'deleted', verdict, ctx);
    return deleted ? 'deleted' : 'already_gone';
  }

  /**
   * Before a power action that may end in a forced power-off (a stop): throws OwnershipRefusedError
   * (after recording the finding) when the server is not this agent's. Meant to be handed to
   * HetznerClient.shutdownServer as its `verify`, which reads the server anyway; it writes nothing
   * when the server is ours, so the power action is not delayed — auditPowerOff records it after.
   */
  async checkPowerOff(server: Pick<HetznerServer, 'id' | 'name' | 'labels'>, ev: ServerEvidence, ctx: GuardContext): Promise<Verdict> {
    const resource: Resource = { type: 'server', id: String(server.id), name: server.name ?? null };
    const verdict = judgeServer(this.deps.fleet, server, ev);
    if (!verdict.ours) {
      await this.refuse(resource, 'power_off', verdict, ctx);
      throw new OwnershipRefusedError(`Server ${server.id} is not this agent's (${verdict.missing.join('; ')}); left running`);
    }
    return verdict;
  }

  /** The audit event of a shutdown checkPowerOff allowed, once it has happened (`how`: graceful, forced). */
  async auditPowerOff(server: Pick<HetznerServer, 'id' | 'name'>, verdict: Verdict, how: string, ctx: GuardContext): Promise<void> {
    await this.deps.audit.recordAudit(this.powerOffAudit(server, verdict, how, ctx));
  }

  /**
   * auditPowerOff's entry, logged but not written: for a caller that writes it together with its own
   * moves (a stop, with the instance reaching `stopped`), and on its own if those cannot happen.
   */
  powerOffAudit(server: Pick<HetznerServer, 'id' | 'name'>, verdict: Verdict, how: string, ctx: GuardContext): AuditEntry {
    const resource: Resource = { type: 'server', id: String(server.id), name: server.name ?? null };
    return this.allowedEntry(resource, 'server_powered_off', `shut down (${how})`, verdict, ctx);
  }

  private async allowed(r: Resource, action: AuditAction, done: string, v: Verdict, ctx: GuardContext): Promise<void> {
    await this.deps.audit.recordAudit(this.allowedEntry(r, action, done, v, ctx));
  }

  private allowedEntry(r: Resource, action: AuditAction, done: string, v: Verdict, ctx: GuardContext): AuditEntry {
    const reason = `${ctx.operation}: ${describe(r)} ${done}; ours by ${v.matched.join('; ')}`;
    this.deps.logger.info({ resource: r, matched: v.matched, operation: ctx.operation }, `[Ownership] ${reason}`);
    return { ...ctx, toStatus: action, reason };
  }

  private async refuse(r: Resource, action: string, v: Verdict, ctx: GuardContext): Promise<'refused'> {
    const reason =
      `${ctx.operation}: refused to ${action.replace('_', ' ')} ${describe(r)}, left in place; ` +
      `missing ${v.missing.join('; ')}${v.matched.length > 0 ? `; matched ${v.matched.join('; ')}` : ''}`;
    this.deps.logger.warn({ resource: r, matched: v.matched, missing: v.missing, operation: ctx.operation }, `[Ownership] ${reason}`);
    await this.deps.audit.recordRefusal(
      {
        resourceType: r.type,
        resourceId: r.id,
        resourceName: r.name,
        action,
        operation: ctx.operation,
        operationId: ctx.operationId ?? null,
        agentId: ctx.agentId ?? null,
        instanceId: ctx.instanceId ?? null,
        matched: v.matched,
        missing: v.missing,
      },
      reason,
    );
    return 'refused';
  }
}

function describe(r: Resource): string {
  const kind = r.type === 'auth_key' ? 'auth key' : r.type;
  return `${kind} ${r.id}${r.name ? ` (${r.name})` : ''}`;
}
