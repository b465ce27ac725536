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
} from '../entities';
import { UUID } from '../db/uuid';
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

const labelsSchema = z
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

const userDataSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(USER_DATA_MAX_BYTES, `must be at most ${USER_DATA_MAX_BYTES} characters`)
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

export const createAgentBody = request(
  z.strictObject({
    name: z
      .string()
      .min(1, 'must not be empty')
      .max(AGENT_NAME_MAX_LENGTH, `must be at most ${AGENT_NAME_MAX_LENGTH} characters`)
      .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'must be a DNS label: lower-case letters, digits and inner hyphens')
      .meta({ description: 'A DNS label: lower-case letters, digits and inner hyphens.' }),
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
  }),
  { id: 'CreateAgentRequest', description: 'Unset fields take the deployment\'s defaults (HETZNER_SERVER_TYPE, HETZNER_LOCATION, HETZNER_IMAGE, HETZNER_SSH_KEYS).' },
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
    userData: nullableString.meta({
      description: 'The agent\'s cloud-init as sent; only an admin token sees it (it may carry credentials), null for every other scope and when none was given.',
    }),
    userDataSize: z.int().min(0).nullable().meta({ description: 'Size of the user data in bytes (UTF-8); null when none was given.' }),
    userDataSha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .nullable()
      .meta({ description: 'Hex SHA-256 of the user data (UTF-8), to compare with a copy without reading it; null when none was given.' }),
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
