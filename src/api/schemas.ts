import { z } from 'zod';
import {
  AGENT_NAME_MAX_LENGTH,
  AGENT_STATUSES,
  EVENT_SUBJECT_TYPES,
  INSTANCE_STATUSES,
  OPERATION_STATUSES,
  OPERATION_TYPES,
  PROVISIONING_JOB_STATUSES,
  TOKEN_NAME_MAX_LENGTH,
  TOKEN_SCOPES,
  NAMED_TOKEN_SCOPES,
  ACTIVITY_KINDS,
  BOOTSTRAP_STATUSES,
  LEASE_HOLDER_MAX_LENGTH,
} from '../entities';
import { UUID } from '../db/uuid';
import { idleLadderSchema } from '../policy/idle-ladder';
import { isReservedLabelKey } from '../fleet/server-labels';
import { OPERATION_QUEUES } from '../queues/queues';
import { mergedUserDataBytes, USER_DATA_MAX_BYTES, userDataProblem } from '../workflows/cloud-init';
import { RESERVED_TOKEN_NAMES } from './auth';
import { PROBLEM_KINDS, problemType, type ProblemKind } from './problem';

/**
 * The wire format of the API as zod schemas: request schemas are what the routes parse with,
 * response schemas describe what the views send. `src/api/contract.ts` turns both into the OpenAPI
 * document; a schema registered in `components` (its `id`) is emitted once and referenced.
 */

export interface ComponentMeta {
  id: string;
  description?: string;
}

/** Request bodies (emitted as their input). */
export const requestComponents = z.registry<ComponentMeta>();
/** Response bodies (emitted as their output). */
export const responseComponents = z.registry<ComponentMeta>();

const request = <T extends z.ZodType>(schema: T, meta: ComponentMeta): T => {
  requestComponents.add(schema, meta);
  return schema;
};
const response = <T extends z.ZodType>(schema: T, meta: ComponentMeta): T => {
  responseComponents.add(schema, meta);
  return schema;
};

export { UUID };

// ---------------------------------------------------------------------------------------------
// Building blocks

/** A string of 1 to `max` characters. */
export const boundedString = (max: number) => z.string().min(1, 'must not be empty').max(max, `must be at most ${max} characters`);

/** An agent's name: a DNS label (its servers and tailnet device are named after it). */
export const agentName = boundedString(AGENT_NAME_MAX_LENGTH).regex(
  /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/,
  'must be a DNS label: lower-case letters, digits and inner hyphens',
);

const uuid = z.uuid();
const dateTime = z.iso.datetime({ offset: true });
const nullableString = z.string().nullable();

export const intParam = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, 'must be a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

/** A comma-separated query list of enum values. */
export const csvOf = <T extends readonly [string, ...string[]]>(values: T) =>
  z
    .string()
    .transform((s) => s.split(',').map((v) => v.trim()).filter(Boolean))
    .pipe(z.array(z.enum(values, { error: () => `must be a comma-separated list of ${values.join(', ')}` })));

const isoDateTimeParam = () =>
  z.iso
    .datetime({ offset: true, error: () => 'must be an ISO 8601 date-time such as 2030-01-31T12:00:00Z' })
    .transform((s) => new Date(s));

export const cursorParam = z.string().min(1).max(200).meta({ description: 'nextCursor of the previous page.' });

// ---------------------------------------------------------------------------------------------
// Hetzner's label rules (https://docs.hetzner.cloud/#labels)

const LABEL_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LABEL_PREFIX = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;
export const MAX_LABELS = 32;

/** Why a label key breaks Hetzner's rules or is tailfleet's own, or null. */
export function labelKeyProblem(key: string): string | null {
  const syntax = labelKeySyntaxProblem(key);
  if (syntax) return syntax;
  if (isReservedLabelKey(key)) return 'the key is reserved for the labels tailfleet sets itself';
  return null;
}

/** Why a label key breaks Hetzner's rules, or null. */
export function labelKeySyntaxProblem(key: string): string | null {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : null;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== null && !LABEL_PREFIX.test(prefix)) {
    return 'the key prefix must be a DNS subdomain of at most 253 characters, followed by "/"';
  }
  if (!LABEL_NAME.test(name)) {
    return 'the key must be 1–63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit';
  }
  return null;
}

/** Why a label value breaks Hetzner's rules, or null. */
export function labelValueProblem(value: string): string | null {
  if (value === '' || LABEL_NAME.test(value)) return null;
  return 'the value must be empty or 1–63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit';
}

export const labelsSchema = z
  .record(z.string(), z.string({ error: () => 'label values must be strings' }))
  .superRefine((labels, ctx) => {
    const keys = Object.keys(labels);
    if (keys.length > MAX_LABELS) ctx.addIssue({ code: 'custom', message: `at most ${MAX_LABELS} labels` });
    for (const key of keys) {
      const problem = labelKeyProblem(key) ?? labelValueProblem(labels[key]!);
      if (problem) ctx.addIssue({ code: 'custom', path: [key], message: problem });
    }
  })
  .meta({
    description:
      "The application's own labels, following Hetzner's label rules; written on the agent's servers beside " +
      "tailfleet's own (`managed-by`, `tailfleet-*`), which they may not name.",
    examples: [{ customer: 'acme', tier: 'gold' }],
  });

const userDataSchema = boundedString(USER_DATA_MAX_BYTES)
  .superRefine((value, ctx) => {
    const problem = userDataProblem(value);
    if (problem) {
      ctx.addIssue({ code: 'custom', message: problem });
      return;
    }
    const bytes = mergedUserDataBytes(value);
    if (bytes > USER_DATA_MAX_BYTES) {
      ctx.addIssue({
        code: 'custom',
        message: `merged with the tailnet join it would be ${bytes} bytes; Hetzner takes at most ${USER_DATA_MAX_BYTES}`,
      });
    }
  })
  .meta({
    description:
      "The agent's own cloud-init: any document cloud-init reads (`#cloud-config`, a `#!` script, `#cloud-boothook`, " +
      '`#include`, …), a MIME multipart, or either base64-encoded (gzip allowed). Sent after the tailnet join in one ' +
      'MIME multipart document; at most 32 KiB after merging.',
  });

// ---------------------------------------------------------------------------------------------
// Requests

const placementSchema = z.strictObject({
  location: z.string().regex(/^[a-z0-9-]{1,32}$/, 'must be a Hetzner location name like fsn1'),
  serverType: z.string().regex(/^[a-z0-9-]{1,32}$/, 'must be a Hetzner server type name like cx22'),
});

/** An agent's lifetime from now, in seconds (create and extend). */
const lifetimeSeconds = () => z.int('must be a whole number of seconds').min(60, 'must be at least 60').max(10 * 366 * 86400, 'must be at most ten years');
/** A moment still to come (an agent's expiry). */
const futureTime = () => isoDateTimeParam().refine((d) => d.getTime() > Date.now(), { message: 'must be in the future' });

export const createAgentBody = request(
  z.strictObject({
    name: agentName.meta({ description: 'A DNS label: lower-case letters, digits and inner hyphens.' }),
    location: z
      .string()
      .regex(/^[a-z0-9-]{1,32}$/, 'must be a Hetzner location name like fsn1')
      .meta({ description: 'Hetzner location, e.g. fsn1.' })
      .optional(),
    serverType: z
      .string()
      .regex(/^[a-z0-9-]{1,32}$/, 'must be a Hetzner server type name like cx22')
      .meta({ description: 'Hetzner server type, e.g. cx22.' })
      .optional(),
    image: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be an image name like ubuntu-24.04 or a snapshot id')
      .meta({ description: 'An image name (e.g. ubuntu-24.04) or a snapshot id.' })
      .optional(),
    sshKeys: z
      .array(z.string().regex(/^[\x21-\x7E]{1,64}$/, 'must be an SSH key name or id (1–64 visible characters)'))
      .max(20, 'at most 20 SSH keys')
      .meta({ description: 'Hetzner SSH key names or ids for root.' })
      .optional(),
    labels: labelsSchema.optional(),
    userData: userDataSchema.optional(),
    placements: z
      .array(placementSchema)
      .min(1, 'must name at least one placement')
      .max(10, 'at most 10 placements')
      .refine((list) => new Set(list.map((p) => `${p.location}:${p.serverType}`)).size === list.length, 'must not name a placement twice')
      .meta({
        description:
          'Where the server may go, in order: when the cloud refuses a create there (sold out, cannot place, disabled), ' +
          'the next is tried in the same provision. Instead of location and serverType.',
      })
      .optional(),
    publicIpv4: z
      .boolean()
      .meta({ description: 'false: the server gets no primary IPv4 (IPv6 only, cheaper; see the README for what it cannot reach).' })
      .optional(),
    idle: idleLadderSchema.optional(),
    reporter: z
      .boolean()
      .meta({
        description:
          'false: no activity reporter on the machine (then `ready` means joined, and only leases and commands count as activity). ' +
          'Default true; without TAILFLEET_PUBLIC_URL no reporter is installed either way.',
      })
      .optional(),
    expiresAt: futureTime()
      .meta({ description: 'When the agent is destroyed (unless a lease is live then); extend with POST /v1/agents/{id}/extend.' })
      .optional(),
    ttlSeconds: lifetimeSeconds().meta({ description: 'The same as expiresAt, counted from now. Not both.' }).optional(),
  }).refine((b) => b.placements === undefined || (b.location === undefined && b.serverType === undefined), {
    path: ['placements'],
    message: 'give placements or location/serverType, not both',
  }).refine((b) => b.expiresAt === undefined || b.ttlSeconds === undefined, { message: 'give expiresAt or ttlSeconds, not both', path: ['ttlSeconds'] }),
  {
    id: 'CreateAgentRequest',
    description:
      "Unset fields take the deployment's defaults (HETZNER_PLACEMENTS or HETZNER_SERVER_TYPE and HETZNER_LOCATION, HETZNER_IMAGE, HETZNER_SSH_KEYS, HETZNER_PUBLIC_IPV4).",
  },
);

export const listAgentsQuery = z
  .strictObject({
    limit: intParam(1, 100).meta({ default: 20 }).optional(),
    cursor: cursorParam.optional(),
    offset: intParam(0, 1_000_000).optional(),
    status: csvOf(AGENT_STATUSES)
      .meta({ description: 'Only agents in these statuses (comma-separated).', examples: ['active,paused'] })
      .optional(),
    name: z
      .string()
      .min(1)
      .max(AGENT_NAME_MAX_LENGTH)
      .meta({ description: 'Only the agents with exactly this name (at most one is not destroyed).' })
      .optional(),
    label: z
      .union([z.string(), z.array(z.string()).max(MAX_LABELS)])
      .transform((v, ctx) => {
        const labels: Record<string, string> = {};
        for (const term of Array.isArray(v) ? v : [v]) {
          const eq = term.indexOf('=');
          const key = eq < 0 ? term : term.slice(0, eq);
          const value = eq < 0 ? '' : term.slice(eq + 1);
          const problem = eq < 0 ? 'must be key=value' : (labelKeySyntaxProblem(key) ?? labelValueProblem(value));
          if (problem) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(term)}: ${problem}` });
          else labels[key] = value;
        }
        return labels;
      })
      .meta({
        description: 'Only agents carrying this label, as key=value; repeat it for several (all must match).',
        examples: ['customer=acme'],
      })
      .optional(),
  })
  .refine((q) => q.cursor === undefined || q.offset === undefined, {
    message: 'use either cursor or offset, not both',
    path: ['cursor'],
  });

export const listEventsQuery = z.strictObject({
  limit: intParam(1, 500).meta({ default: 100 }).optional(),
  cursor: cursorParam.optional(),
});

export const listOperationsQuery = z.strictObject({
  limit: intParam(1, 100).meta({ default: 20 }).optional(),
  cursor: cursorParam.optional(),
  status: csvOf(OPERATION_STATUSES)
    .meta({
      description: `Only operations in these statuses (comma-separated: ${OPERATION_STATUSES.join(', ')}).`,
      examples: ['queued,running'],
    })
    .optional(),
  type: csvOf(OPERATION_TYPES)
    .meta({
      description: `Only operations of these types (comma-separated: ${OPERATION_TYPES.join(', ')}).`,
      examples: ['stop,start'],
    })
    .optional(),
  agentId: z
    .string()
    .regex(UUID, 'must be a UUID')
    .transform((s) => s.toLowerCase())
    .meta({ description: 'Only operations on this agent.', format: 'uuid' })
    .optional(),
  since: isoDateTimeParam()
    .meta({ description: 'Only operations requested at or after this time (ISO 8601 with Z or an offset).' })
    .optional(),
});

export const TOKEN_NAME = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${TOKEN_NAME_MAX_LENGTH - 1}}$`);

export const createTokenBody = request(
  z.strictObject({
    name: z
      .string()
      .regex(TOKEN_NAME, `must be 1–${TOKEN_NAME_MAX_LENGTH} letters, digits, ".", "_" or "-", starting with a letter or digit`)
      .meta({ description: `Not one of the names tailfleet records itself under (${RESERVED_TOKEN_NAMES.join(', ')}), in any case: 422.` }),
    scope: z.enum(NAMED_TOKEN_SCOPES, { error: () => `must be one of ${NAMED_TOKEN_SCOPES.join(', ')}` }),
    expiresAt: isoDateTimeParam()
      .refine((d) => d.getTime() > Date.now(), { message: 'must be in the future' })
      .nullable()
      .meta({ description: 'After this time the token gets 401. Omitted: never expires.' })
      .optional(),
  }),
  { id: 'CreateTokenRequest' },
);

export const listTokensQuery = z.strictObject({
  includeRevoked: z
    .enum(['true', 'false'], { error: () => 'must be true or false' })
    .meta({ description: 'Also list revoked tokens.', default: 'false' })
    .optional(),
});

// ---------------------------------------------------------------------------------------------
// Responses

export const problemSchema = response(
  z.looseObject({
    type: z.enum(Object.keys(PROBLEM_KINDS).map((k) => problemType(k as ProblemKind)) as [string, ...string[]]),
    title: z.string(),
    status: z.int(),
    detail: z.string(),
    instance: z.string().meta({ description: 'Path of the request.' }).optional(),
    requestId: z.string().meta({ description: 'Same as the X-Request-Id response header.' }).optional(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
  { id: 'Problem', description: 'RFC 9457 problem details; some kinds add fields of their own.' },
);

export const linksSchema = response(
  z.record(z.string(), z.string()).meta({ examples: [{ self: '/v1/agents/…', operation: '/v1/operations/…' }] }),
  { id: 'Links', description: 'Related resources by relation (self, agent, operation, events, …).' },
);

export const agentSpecSchema = response(
  z.object({
    serverType: z.string(),
    location: z.string(),
    image: z.string(),
    sshKeys: z.array(z.string()),
    placements: z
      .array(z.object({ location: z.string(), serverType: z.string() }))
      .meta({ description: 'Where the server may go, in order (the first is location and serverType).' }),
    publicIpv4: z.boolean().nullable().meta({ description: "Whether servers get a primary IPv4; null = the deployment's HETZNER_PUBLIC_IPV4." }),
    userData: nullableString.meta({
      description: 'The agent\'s cloud-init as sent; only an admin token sees it (it may carry credentials), null for every other scope and when none was given.',
    }),
    userDataSize: z.int().min(0).nullable().meta({ description: 'Size of the user data in bytes (UTF-8); null when none was given.' }),
    userDataSha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .nullable()
      .meta({ description: 'Hex SHA-256 of the user data (UTF-8), to compare with a copy without reading it; null when none was given.' }),
    idle: z
      .array(z.object({ afterSeconds: z.int(), action: z.enum(['stop', 'hibernate', 'destroy']) }))
      .nullable()
      .meta({ description: 'The idle ladder; null: none.' }),
    reporter: z.boolean().meta({ description: 'Whether the activity reporter is installed on its machines.' }),
  }),
  { id: 'AgentSpec', description: 'What every instance of the agent is made from, defaults filled in.' },
);

const money = z.number().meta({ description: 'Monthly, gross (VAT included), in `currency`.' });

export const agentCostSchema = response(
  z.object({ currency: z.string(), monthly: money, server: money, primaryIpv4: money, snapshot: money }),
  { id: 'AgentCost', description: 'What the agent costs now, per month.' },
);

export const fleetCostSchema = response(
  z.object({
    currency: z.string(),
    monthly: z.object({
      total: money,
      byStatus: z.record(z.string(), money).meta({ description: 'Per agent status.' }),
      hibernationSaving: money.meta({ description: 'What hibernated agents save now (server and address, less snapshot).' }),
      potentialSaving: money.meta({ description: 'What hibernating every paused agent would save on top.' }),
    }),
    projects: z
      .array(
        z.object({
          name: z.string().meta({ description: 'The project as HETZNER_PROJECTS names it (`default` for HETZNER_API_TOKEN).' }),
          servers: z.int().min(0).meta({ description: 'Live instances with a server in the project.' }),
          maxServers: z.int().nullable().meta({ description: 'The configured server limit; null = not configured.' }),
          full: z.boolean().meta({ description: 'Refused a create with resource_limit_exceeded within PLACEMENT_COOLDOWN_SECONDS.' }),
          monthly: money,
          budget: z
            .object({ limit: z.int().nullable(), remaining: z.int().nullable(), at: dateTime })
            .nullable()
            .meta({ description: "Hetzner's request budget (RateLimit-Limit/-Remaining) as a worker last saw it; null until one has created there." }),
          refusals: z
            .object({ total: z.int().min(0), byCode: z.record(z.string(), z.int()) })
            .meta({ description: 'Creates the project refused in the last 24 hours, by Hetzner error code.' }),
        }),
      )
      .meta({ description: 'Per Hetzner project.' })
      .optional(),
    policies: z
      .object({
        month: z.string().meta({ description: 'YYYY-MM (UTC).' }),
        saved: money.meta({
          description: "Server and address hours not billed this month after a policy's hibernate or destroy (until the agent was started again), less the snapshots kept.",
        }),
        actions: z
          .object({ stop: z.int(), hibernate: z.int(), destroy: z.int() })
          .meta({ description: "The policies' actions this month that succeeded. A stop saves nothing: a server is billed while it is off." }),
      })
      .meta({ description: 'What the idle ladders, expiry and auto-hibernate saved this month.' }),
  }),
  { id: 'FleetCost' },
);

export const agentSchema = response(
  z.object({
    id: uuid,
    name: z.string(),
    status: z.enum(AGENT_STATUSES),
    labels: z.record(z.string(), z.string()),
    spec: agentSpecSchema.nullable().meta({ description: 'Null for agents created before specs were stored.' }),
    cost: agentCostSchema
      .nullable()
      .optional()
      .meta({
        description:
          'Current monthly cost (server and primary IPv4, or snapshot when hibernated); null while prices cannot be read. Only where the process reads prices.',
      }),
    ready: z.boolean().meta({
      description:
        'Joined the tailnet and running, and (with the reporter) its own cloud-init has finished (`bootstrap.status` done). ' +
        'GET /v1/agents/{id}?wait=ready waits for it.',
    }),
    expiresAt: dateTime.nullable().meta({
      description: 'When the expiry policy destroys it (the earlier of its own expiry and MAX_AGENT_LIFETIME_HOURS from creation); null: never.',
    }),
    lastActivityAt: dateTime.nullable().meta({ description: 'The last activity the idle ladder counts from; null: none yet.' }),
    lastActivity: z
      .object({ at: dateTime, kind: z.enum(ACTIVITY_KINDS) })
      .nullable()
      .meta({ description: 'What that activity was: a busy heartbeat, a session, a lease (a live one counts as now), or a command.' }),
    bootstrap: z
      .object({ status: z.enum(BOOTSTRAP_STATUSES), detail: nullableString, at: dateTime })
      .nullable()
      .meta({ description: "How the machine's own cloud-init ended, as its reporter said; null until it did." }),
    heartbeat: z
      .object({ at: dateTime, busy: z.boolean().nullable(), sessions: z.int(), load: z.number().nullable() })
      .nullable()
      .meta({ description: 'The last heartbeat of its reporter; null: none yet.' }),
    createdAt: dateTime,
    updatedAt: dateTime,
  }),
  { id: 'Agent' },
);

export const instanceSchema = response(
  z.object({
    id: uuid,
    agentId: uuid,
    status: z.enum(INSTANCE_STATUSES),
    serverId: nullableString.meta({ description: 'Hetzner server id (int64 as a string).' }),
    serverName: nullableString,
    serverIp: nullableString,
    tailscaleDeviceId: nullableString,
    tailscaleIp: nullableString,
    tailscaleHostname: nullableString,
    location: nullableString,
    serverType: z.string(),
    hetznerProject: nullableString.meta({ description: 'The Hetzner project (HETZNER_PROJECTS name) the server and its snapshot are in; null before the first create.' }),
    placementRefusals: z
      .array(
        z.object({
          project: z.string(),
          location: z.string(),
          serverType: z.string(),
          status: z.int(),
          code: z.string().meta({ description: 'resource_unavailable (sold out), placement_error, resource_limit_exceeded (project full), …' }),
          message: z.string(),
          at: dateTime,
        }),
      )
      .meta({ description: 'Creates the cloud refused before the server landed at location/serverType, oldest first.' }),
    image: z.string(),
    error: nullableString,
    startedAt: dateTime.nullable(),
    stoppedAt: dateTime.nullable(),
    destroyedAt: dateTime.nullable(),
    createdAt: dateTime,
    updatedAt: dateTime,
  }),
  { id: 'Instance' },
);

export const provisioningJobSchema = response(
  z.object({
    id: uuid,
    agentId: uuid,
    instanceId: uuid,
    status: z.enum(PROVISIONING_JOB_STATUSES),
    attempts: z.int(),
    error: nullableString,
    failedStep: nullableString,
    startedAt: dateTime.nullable(),
    finishedAt: dateTime.nullable(),
    createdAt: dateTime,
    updatedAt: dateTime,
  }),
  { id: 'ProvisioningJob' },
);

export const operationSchema = response(
  z.object({
    id: uuid,
    type: z.enum(OPERATION_TYPES),
    status: z.enum(OPERATION_STATUSES),
    agentId: uuid.nullable(),
    provisioningJobId: uuid.nullable(),
    idempotencyKey: nullableString.meta({ description: 'The Idempotency-Key the request carried.' }),
    queueJobId: nullableString,
    attempts: z.int(),
    progress: z.int().min(0).max(100),
    currentStep: nullableString,
    error: nullableString,
    failedStep: nullableString,
    requestedBy: z.string().meta({
      description:
        'Who asked: `token:<name>#<token id>` for a named token, `bootstrap` for API_TOKEN, or `system` for the reconciler, ' +
        'the rollback hook and the sweep.',
      examples: ['token:ci-deploy#3f1c2a9e-0b7d-4c5e-9a41-2d6f8e7b1c03'],
    }),
    reason: nullableString.meta({
      description: 'Why tailfleet asked for it itself (`requestedBy` system): e.g. "idle 30 min since 2030-01-31T12:00:00.000Z (last session)", "expired". Null for requests.',
    }),
    requestedAt: dateTime,
    startedAt: dateTime.nullable(),
    finishedAt: dateTime.nullable(),
    updatedAt: dateTime,
  }),
  { id: 'Operation' },
);

export const eventSchema = response(
  z.object({
    id: z.string().meta({ description: 'Monotonic (bigint as a string).' }),
    entityType: z.enum(EVENT_SUBJECT_TYPES),
    entityId: uuid,
    agentId: uuid.nullable(),
    fromStatus: nullableString,
    toStatus: z.string(),
    reason: z.string(),
    operationId: uuid.nullable(),
    actor: z.string().meta({ description: 'Who caused it: `token:<name>#<token id>`, `bootstrap`, or `system`.' }),
    at: dateTime,
  }),
  { id: 'Event' },
);

export const jobRefSchema = response(
  z.object({ queue: z.enum([...OPERATION_QUEUES, 'reconcile']), id: nullableString }),
  { id: 'JobRef', description: 'The BullMQ job carrying the operation.' },
);

export const queueJobSchema = response(
  z.object({
    queue: z.string(),
    id: z.string(),
    state: z.enum([
      'waiting',
      'active',
      'delayed',
      'prioritized',
      'waiting-children',
      'completed',
      'failed',
      'not_retained',
      'unavailable',
    ]),
    progress: z.unknown().optional(),
    attemptsMade: z.int().optional(),
    failedReason: nullableString.optional(),
    createdAt: dateTime.nullable().optional(),
    processedAt: dateTime.nullable().optional(),
    finishedAt: dateTime.nullable().optional(),
  }),
  { id: 'QueueJob' },
);

export const agentCreatedSchema = response(
  z.object({
    agent: agentSchema,
    instance: instanceSchema,
    operation: operationSchema,
    provisioningJob: provisioningJobSchema,
    job: jobRefSchema,
    links: linksSchema,
  }),
  { id: 'AgentCreated' },
);

export const commandAcceptedSchema = response(
  z.object({ operation: operationSchema, job: jobRefSchema, links: linksSchema }),
  { id: 'CommandAccepted' },
);

export const agentSummarySchema = response(agentSchema.extend({ instance: instanceSchema.nullable() }), {
  id: 'AgentSummary',
});

export const agentPageSchema = response(
  z.object({
    items: z.array(agentSummarySchema),
    limit: z.int(),
    offset: z.int().optional(),
    nextCursor: nullableString.meta({ description: 'Pass as `cursor` for the next page; null on the last.' }),
  }),
  { id: 'AgentPage' },
);

export const agentDetailSchema = response(
  z.object({
    agent: agentSchema,
    instance: instanceSchema.nullable().meta({ description: 'The live instance, else the most recent one.' }),
    operation: operationSchema.nullable().meta({ description: 'The most recent queued or running operation.' }),
    links: linksSchema,
  }),
  { id: 'AgentDetail' },
);

export const eventPageSchema = response(z.object({ items: z.array(eventSchema), nextCursor: nullableString }), {
  id: 'EventPage',
});

export const operationDetailSchema = response(
  z.object({ operation: operationSchema, job: queueJobSchema.nullable(), links: linksSchema }),
  { id: 'OperationDetail' },
);

export const operationPageSchema = response(
  z.object({
    items: z.array(operationSchema),
    limit: z.int(),
    nextCursor: nullableString.meta({ description: 'Pass as `cursor` for the next page; null on the last.' }),
  }),
  { id: 'OperationPage' },
);

export const tokenSchema = response(
  z.object({
    id: uuid,
    name: z.string(),
    scope: z.enum(TOKEN_SCOPES),
    tokenPrefix: z.string().meta({ description: 'The first characters of the secret, to tell tokens apart.' }),
    createdAt: dateTime,
    expiresAt: dateTime.nullable(),
    revokedAt: dateTime.nullable(),
    lastUsedAt: dateTime.nullable().meta({ description: 'Recorded at most once a minute.' }),
  }),
  { id: 'Token' },
);

export const tokenCreatedSchema = response(
  tokenSchema.extend({ token: z.string().meta({ description: 'The secret. Shown only in this answer.' }) }),
  { id: 'TokenCreated' },
);

export const tokenListSchema = response(z.object({ items: z.array(tokenSchema) }), { id: 'TokenList' });

export const healthSchema = response(z.object({ status: z.literal('ok') }), { id: 'Health' });

export const readinessSchema = response(
  z.object({
    status: z.enum(['ready', 'unavailable']),
    down: z
      .array(z.enum(['database', 'redis', 'hetzner', 'tailscale']))
      .meta({ description: 'While unavailable: the dependencies that are down (a cloud: it refuses our credentials).' })
      .optional(),
    postgres: z.boolean().meta({ description: 'Admin token only.' }).optional(),
    redis: z.boolean().meta({ description: 'Admin token only.' }).optional(),
    credentials: z.record(z.string(), z.string()).meta({ description: 'Admin token only (worker roles).' }).optional(),
    problems: z.array(z.string()).meta({ description: 'Admin token only: what to fix, naming the settings.' }).optional(),
  }),
  {
    id: 'Readiness',
    description: 'Without a token `status` and `down` only; with an admin token (Bearer) also the details and the settings to fix.',
  },
);

export const reconcileReportSchema = response(
  z.looseObject({
    id: nullableString,
    trigger: z.string(),
    operationId: uuid.nullable(),
    startedAt: dateTime,
    finishedAt: dateTime,
    durationMs: z.number(),
    summary: z.record(z.string(), z.int()),
    drift: z.array(z.looseObject({})).optional(),
    stuck: z.array(z.looseObject({})).optional(),
    orphanServers: z.array(z.looseObject({})).optional(),
    orphanDevices: z.array(z.looseObject({})).optional(),
    errors: z.array(z.string()).optional(),
  }),
  { id: 'ReconcileReport', description: 'Drift, stuck instances and orphans found by one pass, with the repairs made.' },
);

export const reconcileReportAnswerSchema = response(z.object({ report: reconcileReportSchema, links: linksSchema }), {
  id: 'ReconcileReportAnswer',
});

// ---------------------------------------------------------------------------------------------
// Activity, leases, expiry (src/policy)

export const heartbeatBody = request(
  z.strictObject({
    busy: z.boolean().meta({ description: 'The application says it is working (the reporter: while its busy file exists).' }).optional(),
    sessions: z.int('must be a whole number').min(0).max(100_000).meta({ description: 'Open login and SSH sessions.' }),
    load: z.number().min(0).max(1_000_000).meta({ description: 'The 1-minute load average.' }).optional(),
  }),
  { id: 'HeartbeatRequest', description: 'Busy, or with a session, it counts as activity.' },
);

export const bootstrapBody = request(
  z.strictObject({
    status: z.enum(BOOTSTRAP_STATUSES, { error: () => `must be one of ${BOOTSTRAP_STATUSES.join(', ')}` }),
    detail: z.string().max(500, 'must be at most 500 characters').optional(),
  }),
  { id: 'BootstrapRequest', description: "How the machine's own cloud-init ended (`cloud-init status --wait`)." },
);

export const activityAnswerSchema = response(
  z.object({
    agentId: uuid,
    ready: z.boolean(),
    lastActivity: z.object({ at: dateTime, kind: z.enum(ACTIVITY_KINDS) }).nullable(),
  }),
  { id: 'ActivityRecorded' },
);

const ttlSeconds = z
  .int('must be a whole number of seconds')
  .min(1, 'must be at least 1')
  .max(366 * 86400, 'must be at most a year');

export const createLeaseBody = request(
  z.strictObject({
    holder: boundedString(LEASE_HOLDER_MAX_LENGTH)
      .regex(/^[\x20-\x7E]+$/, 'must be printable ASCII')
      .meta({ description: 'Who holds it (a CI job, a user): shown in the lease and the audit.' }),
    ttlSeconds: ttlSeconds.meta({ description: 'How long it lives unless renewed or released.' }),
  }),
  { id: 'CreateLeaseRequest' },
);

export const renewLeaseBody = request(
  z.strictObject({ ttlSeconds: ttlSeconds.meta({ description: 'The lease lives this long from now.' }) }),
  { id: 'RenewLeaseRequest' },
);

export const leaseSchema = response(
  z.object({
    id: uuid,
    agentId: uuid,
    holder: z.string(),
    expiresAt: dateTime,
    releasedAt: dateTime.nullable(),
    live: z.boolean().meta({ description: 'Not released and not expired: the agent is not stopped, expired or claimed meanwhile.' }),
    createdBy: z.string(),
    createdAt: dateTime,
  }),
  { id: 'Lease' },
);

export const leaseListSchema = response(z.object({ items: z.array(leaseSchema) }), { id: 'LeaseList' });

export const extendBody = request(
  z
    .strictObject({
      ttlSeconds: lifetimeSeconds().meta({ description: 'The agent now expires this long from now.' }).optional(),
      expiresAt: futureTime()
        .meta({ description: 'The agent now expires at this time.' })
        .optional(),
    })
    .refine((b) => (b.ttlSeconds === undefined) !== (b.expiresAt === undefined), { message: 'give exactly one of ttlSeconds and expiresAt', path: ['ttlSeconds'] }),
  { id: 'ExtendRequest', description: 'At most MAX_AGENT_LIFETIME_HOURS from the agent\'s creation (422 beyond).' },
);

/** The longest a GET /v1/agents/{id}?wait=ready holds the connection (as a long poll on an operation). */
export const READY_WAIT_MAX_SECONDS = 60;

export const getAgentQuery = z.strictObject({
  wait: z
    .literal('ready', { error: () => 'must be "ready"' })
    .meta({ description: 'Answer once the agent is `ready` (or when `timeout` runs out: then as it is, with `ready` false).' })
    .optional(),
  timeout: intParam(0, READY_WAIT_MAX_SECONDS).meta({ description: `Seconds to wait with wait=ready (default ${READY_WAIT_MAX_SECONDS}).` }).optional(),
});
