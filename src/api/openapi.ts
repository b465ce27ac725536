import {
  AGENT_STATUSES,
  INSTANCE_STATUSES,
  OPERATION_STATUSES,
  OPERATION_TYPES,
  PROVISIONING_JOB_STATUSES,
  TOKEN_NAME_MAX_LENGTH,
  TOKEN_SCOPES,
  type TokenScope,
} from '../entities';
import { EVENT_ENTITY_TYPES } from '../entities';
import { OPERATION_QUEUES } from '../queues/queues';
import { PROBLEM_KINDS, problemType } from './problem';

/**
 * OpenAPI 3.1 description of the HTTP API, served at GET /v1/openapi.json. Kept as a plain object
 * beside the routes (not generated) so a reviewer sees the contract in one file; the API tests check
 * that every documented path is routed and every route is documented.
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const nullable = (schema: Record<string, unknown>) => ({ oneOf: [schema, { type: 'null' }] });
const dateTime = { type: 'string', format: 'date-time' };
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' };
const uuid = { type: 'string', format: 'uuid' };

const problem = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: ref('Problem') } },
});

const json = (description: string, schema: Record<string, unknown>, headers?: Record<string, unknown>) => ({
  description,
  ...(headers ? { headers } : {}),
  content: { 'application/json': { schema } },
});

const idParam = (name: string, description: string) => ({
  name,
  in: 'path',
  required: true,
  description,
  schema: uuid,
});

const idempotencyKeyParam = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Makes the request safe to retry: the same key returns the operation it created first (200) instead of ' +
    'creating another. Reusing a key for a different request is a 422. 1–200 visible ASCII characters.',
  schema: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7E]+$' },
};

/**
 * The scope an operation needs, as OpenAPI 3.1 lets a non-OAuth scheme name roles; the token tests
 * derive their (scope × route) table from these.
 */
const scoped = (scope: TokenScope) => ({ security: [{ bearerAuth: [scope] }] });

const forbidden = (scope: TokenScope) => ({
  '403': problem(`The token lacks scope ${scope} (WWW-Authenticate: Bearer error="insufficient_scope").`),
});

const commonErrors = {
  '401': problem('Missing, unknown, revoked or expired bearer token.'),
  '500': problem('Unexpected failure (never carries internal details).'),
  '503': problem('PostgreSQL or Redis is unavailable; nothing was changed. Retry later (see Retry-After).'),
};

const commandResponses = (what: string) => ({
  '200': json('Replay of an earlier request with the same Idempotency-Key: the operation it created.', ref('CommandAccepted')),
  '202': json(`${what} queued.`, ref('CommandAccepted')),
  '400': problem('Malformed id, body or Idempotency-Key.'),
  ...commonErrors,
  ...forbidden('operate'),
  '404': problem('Unknown agent.'),
  '409': problem('The current state does not allow it (e.g. "No running instance to stop").'),
  '415': problem('A body was sent that is not JSON.'),
  '422': problem('Idempotency-Key already used for a different request.'),
});

const agentCommand = (verb: 'stop' | 'start' | 'destroy', summary: string, description: string) => ({
  post: {
    operationId: `${verb}Agent`,
    summary,
    description,
    tags: ['agents'],
    ...scoped('operate'),
    parameters: [idParam('id', 'Agent id.'), idempotencyKeyParam],
    responses: commandResponses(`The ${verb} operation was`),
  },
});

const reconcilePaths = {
  '/v1/reconcile': {
    get: {
      operationId: 'getReconcileReport',
      summary: 'Latest drift / orphan report (written by whichever worker ran the pass)',
      tags: ['system'],
      ...scoped('read'),
      responses: {
        '200': json('The latest report.', {
          type: 'object',
          required: ['report', 'links'],
          properties: { report: ref('ReconcileReport'), links: ref('Links') },
        }),
        ...commonErrors,
        '404': problem('No pass has finished yet.'),
      },
    },
    post: {
      operationId: 'requestReconcilePass',
      summary: 'Queue one reconcile pass now',
      tags: ['system'],
      ...scoped('operate'),
      responses: {
        '202': json('Pass queued.', ref('CommandAccepted')),
        '200': json('A pass is already queued: that one.', ref('CommandAccepted')),
        ...commonErrors,
        ...forbidden('operate'),
      },
    },
  },
};

const reconcileSchemas = {
  ReconcileReport: {
    type: 'object',
    description: 'Drift, stuck instances and orphans found by one pass, with the repairs made.',
    required: ['trigger', 'startedAt', 'finishedAt', 'summary'],
    properties: {
      id: { type: ['string', 'null'] },
      trigger: { type: 'string' },
      operationId: { type: ['string', 'null'], format: 'uuid' },
      startedAt: dateTime,
      finishedAt: dateTime,
      durationMs: { type: 'number' },
      summary: { type: 'object', additionalProperties: { type: 'integer' } },
      drift: { type: 'array', items: { type: 'object' } },
      stuck: { type: 'array', items: { type: 'object' } },
      orphanServers: { type: 'array', items: { type: 'object' } },
      orphanDevices: { type: 'array', items: { type: 'object' } },
      attention: {
        type: 'array',
        items: { type: 'object' },
        description:
          'Destructive calls the ownership guard refused (needs_attention): resource, operation, the facts that matched and the ones missing; `state` open or resolved by this pass.',
      },
      errors: { type: 'array', items: { type: 'string' } },
    },
  },
};

/** The document of an app; /v1/reconcile is described only when that app mounts it. */
export function buildOpenApiDocument(opts: { reconcile?: boolean } = {}) {
  if (!opts.reconcile) return openApiDocument;
  return {
    ...openApiDocument,
    paths: { ...openApiDocument.paths, ...reconcilePaths },
    components: {
      ...openApiDocument.components,
      schemas: { ...openApiDocument.components.schemas, ...reconcileSchemas },
    },
  };
}

export const openApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'tailfleet API',
    version: '1.0.0',
    description:
      'Lifecycle of agent machines (a Hetzner Cloud server joined to a Tailscale tailnet). Commands are ' +
      'recorded as operations and carried out asynchronously by workers; poll GET /v1/operations/{id}. ' +
      'Errors are RFC 9457 problem details.',
  },
  servers: [{ url: '/' }],
  security: [{ bearerAuth: [] }],
  tags: [
    { name: 'agents', description: 'Agent machines and their lifecycle commands.' },
    { name: 'operations', description: 'Accepted commands and their progress.' },
    { name: 'provisioning', description: 'Provisioning jobs.' },
    { name: 'tokens', description: 'Named API tokens and their scopes.' },
    { name: 'system', description: 'Health, readiness, metrics and this document.' },
  ],
  paths: {
    '/v1/agents': {
      post: {
        operationId: 'createAgent',
        summary: 'Create an agent and queue its provision',
        tags: ['agents'],
        ...scoped('operate'),
        parameters: [idempotencyKeyParam],
        requestBody: { required: true, content: { 'application/json': { schema: ref('CreateAgentRequest') } } },
        responses: {
          '201': json('Agent, instance and provisioning job created; provision queued.', ref('AgentCreated'), {
            Location: { description: 'URL of the new agent.', schema: { type: 'string' } },
          }),
          '200': json('Replay of an earlier request with the same Idempotency-Key.', ref('AgentCreated')),
          '400': problem('Malformed JSON or invalid fields (every problem is listed in `errors`).'),
          ...commonErrors,
          ...forbidden('operate'),
          '413': problem('Body larger than 16 KiB.'),
          '415': problem('Content-Type is not application/json.'),
          '422': problem('Idempotency-Key already used for a different request.'),
        },
      },
      get: {
        operationId: 'listAgents',
        summary: 'List agents, newest first',
        description:
          'Keyset pagination with `cursor` (pass `nextCursor` from the previous page) or offset pagination ' +
          'with `offset`; not both.',
        tags: ['agents'],
        ...scoped('read'),
        parameters: [
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } },
          { name: 'cursor', in: 'query', schema: { type: 'string' } },
          { name: 'offset', in: 'query', schema: { type: 'integer', minimum: 0 } },
          {
            name: 'status',
            in: 'query',
            description: 'Only agents in these statuses (comma-separated).',
            schema: { type: 'string', examples: ['active,paused'] },
          },
        ],
        responses: {
          '200': json('One page of agents with their current instance.', ref('AgentPage')),
          '400': problem('Invalid query parameters.'),
          ...commonErrors,
        },
      },
    },
    '/v1/agents/{id}': {
      get: {
        operationId: 'getAgent',
        summary: 'An agent with its current instance and its queued or running operation',
        tags: ['agents'],
        ...scoped('read'),
        parameters: [idParam('id', 'Agent id.')],
        responses: {
          '200': json('The agent.', ref('AgentDetail')),
          '400': problem('The id is not a UUID.'),
          ...commonErrors,
          '404': problem('Unknown agent.'),
        },
      },
    },
    '/v1/agents/{id}/events': {
      get: {
        operationId: 'listAgentEvents',
        summary: 'Audit trail of every status change of the agent and its instances, jobs and operations',
        tags: ['agents'],
        ...scoped('read'),
        parameters: [
          idParam('id', 'Agent id.'),
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 500, default: 100 } },
          { name: 'cursor', in: 'query', description: 'nextCursor of the previous page.', schema: { type: 'string' } },
        ],
        responses: {
          '200': json('Events, oldest first.', ref('EventPage')),
          '400': problem('The id or a query parameter is invalid.'),
          ...commonErrors,
          '404': problem('Unknown agent.'),
        },
      },
    },
    '/v1/agents/{id}/stop': agentCommand(
      'stop',
      'Stop the agent (graceful shutdown, then power off after the timeout)',
      'Requires a running instance.',
    ),
    '/v1/agents/{id}/start': agentCommand('start', 'Start a stopped agent', 'Requires a stopped instance.'),
    '/v1/agents/{id}/destroy': agentCommand(
      'destroy',
      'Destroy the agent: delete its server and tailnet device',
      'Allowed in any state except destroyed.',
    ),
    '/v1/provisioning-jobs/{id}/rollback': {
      post: {
        operationId: 'rollbackProvisioningJob',
        summary: 'Roll back a failed provision (exactly once per provisioning job)',
        description:
          'Deletes every server and tailnet device the provision left behind. There is at most one rollback ' +
          'operation per provisioning job: asking again returns it (200).',
        tags: ['provisioning'],
        ...scoped('operate'),
        parameters: [idParam('id', 'Provisioning job id.'), idempotencyKeyParam],
        responses: {
          ...commandResponses('The rollback was'),
          '404': problem('Unknown provisioning job ("Job <id> not found").'),
          '409': problem('The provisioning job has not failed (it is queued, running or succeeded).'),
        },
      },
    },
    '/v1/operations/{id}': {
      get: {
        operationId: 'getOperation',
        summary: 'State, progress, attempts and error of an operation',
        description:
          'PostgreSQL is the source of truth; `job` adds what BullMQ still retains about the queue job ' +
          '(state `not_retained` once retention removed it, `unavailable` while Redis is down).',
        tags: ['operations'],
        ...scoped('read'),
        parameters: [idParam('id', 'Operation id.')],
        responses: {
          '200': json('The operation.', ref('OperationDetail')),
          '400': problem('The id is not a UUID.'),
          ...commonErrors,
          '404': problem('Unknown operation.'),
        },
      },
    },
    '/v1/operations': {
      get: {
        operationId: 'listOperations',
        summary: 'List operations, newest first',
        description:
          'Keyset pagination on (requestedAt, id): pass `nextCursor` from the previous page as `cursor`. ' +
          'Filters combine with AND; `status` and `type` take comma-separated lists.',
        tags: ['operations'],
        ...scoped('read'),
        parameters: [
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } },
          { name: 'cursor', in: 'query', description: 'nextCursor of the previous page.', schema: { type: 'string' } },
          {
            name: 'status',
            in: 'query',
            description: `Only operations in these statuses (comma-separated: ${OPERATION_STATUSES.join(', ')}).`,
            schema: { type: 'string', examples: ['queued,running'] },
          },
          {
            name: 'type',
            in: 'query',
            description: `Only operations of these types (comma-separated: ${OPERATION_TYPES.join(', ')}).`,
            schema: { type: 'string', examples: ['stop,start'] },
          },
          { name: 'agentId', in: 'query', description: 'Only operations on this agent.', schema: uuid },
          {
            name: 'since',
            in: 'query',
            description: 'Only operations requested at or after this time (ISO 8601 with Z or an offset).',
            schema: dateTime,
          },
        ],
        responses: {
          '200': json('One page of operations.', ref('OperationPage')),
          '400': problem('Invalid query parameters.'),
          ...commonErrors,
        },
      },
    },
    '/v1/tokens': {
      post: {
        operationId: 'createToken',
        summary: 'Create a named API token; its secret is in this answer only',
        description:
          'The secret (`tf_` + 43 characters) is stored only as its SHA-256, so it cannot be shown again: ' +
          'keep it from this answer. Names are unique among tokens that are not revoked; `bootstrap` is ' +
          'reserved for API_TOKEN.',
        tags: ['tokens'],
        ...scoped('admin'),
        requestBody: { required: true, content: { 'application/json': { schema: ref('CreateTokenRequest') } } },
        responses: {
          '201': json('The token, with its secret.', ref('TokenCreated')),
          '400': problem('Invalid fields (every problem is listed in `errors`).'),
          ...commonErrors,
          ...forbidden('admin'),
          '409': problem('A token that is not revoked already has this name.'),
          '415': problem('Content-Type is not application/json.'),
        },
      },
      get: {
        operationId: 'listTokens',
        summary: 'List API tokens (never their secrets or hashes), newest first',
        tags: ['tokens'],
        ...scoped('admin'),
        parameters: [
          {
            name: 'includeRevoked',
            in: 'query',
            description: 'Also list revoked tokens.',
            schema: { type: 'string', enum: ['true', 'false'], default: 'false' },
          },
        ],
        responses: {
          '200': json('The tokens.', ref('TokenList')),
          '400': problem('Invalid query parameters.'),
          ...commonErrors,
          ...forbidden('admin'),
        },
      },
    },
    '/v1/tokens/{id}': {
      delete: {
        operationId: 'revokeToken',
        summary: 'Revoke a token: the next request that carries it gets a 401',
        tags: ['tokens'],
        ...scoped('admin'),
        parameters: [idParam('id', 'Token id.')],
        responses: {
          '204': { description: 'Revoked (or already revoked).' },
          '400': problem('The id is not a UUID.'),
          ...commonErrors,
          ...forbidden('admin'),
          '404': problem('Unknown token.'),
        },
      },
    },
    '/v1/openapi.json': {
      get: {
        operationId: 'getOpenApiDocument',
        summary: 'This document',
        tags: ['system'],
        security: [],
        responses: { '200': json('OpenAPI 3.1 document.', { type: 'object' }) },
      },
    },
    '/healthz': {
      get: {
        operationId: 'liveness',
        summary: 'Liveness: the process serves HTTP',
        tags: ['system'],
        security: [],
        responses: { '200': json('Alive.', ref('Health')) },
      },
    },
    '/readyz': {
      get: {
        operationId: 'readiness',
        summary: 'Readiness: PostgreSQL and Redis answer',
        tags: ['system'],
        security: [],
        responses: {
          '200': json('Ready.', ref('Readiness')),
          '503': json('A dependency is down.', ref('Readiness')),
        },
      },
    },
    '/metrics': {
      get: {
        operationId: 'metrics',
        summary: 'Prometheus metrics, including job counts per queue and state',
        tags: ['system'],
        security: [],
        responses: {
          '200': {
            description: 'Prometheus text exposition format.',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
        },
      },
    },
    '/admin/queues': {
      get: {
        operationId: 'bullBoard',
        summary: 'Bull Board dashboard (HTML; its JSON API lives below /admin/queues/api)',
        description:
          'Opens with the board login (BULL_BOARD_USER / BULL_BOARD_PASSWORD, when both are set) or an admin ' +
          'token: as a Bearer token, or as the Basic password with any user name.',
        tags: ['system'],
        security: [{ basicAuth: [] }, { bearerAuth: ['admin'] }],
        responses: {
          '200': { description: 'Dashboard.', content: { 'text/html': { schema: { type: 'string' } } } },
          '401': problem('Missing or wrong credentials (WWW-Authenticate: Basic).'),
          '403': problem('A valid token without scope admin.'),
        },
      },
    },
  },
  components: {
    securitySchemes: {
      bearerAuth: {
        type: 'http',
        scheme: 'bearer',
        description:
          'A named token from POST /v1/tokens, or the deployment\'s API_TOKEN (an admin named `bootstrap`). ' +
          'Scopes nest: read (GET routes) ⊂ operate (commands, rollback, reconcile) ⊂ admin (tokens, Bull Board). ' +
          'Each operation lists the scope it needs.',
      },
      basicAuth: {
        type: 'http',
        scheme: 'basic',
        description: 'BULL_BOARD_USER / BULL_BOARD_PASSWORD, or any user name with an admin token as the password.',
      },
    },
    schemas: {
      Problem: {
        type: 'object',
        description: 'RFC 9457 problem details.',
        required: ['type', 'title', 'status', 'detail'],
        properties: {
          type: {
            type: 'string',
            format: 'uri',
            enum: Object.keys(PROBLEM_KINDS).map((k) => problemType(k as keyof typeof PROBLEM_KINDS)),
          },
          title: { type: 'string' },
          status: { type: 'integer' },
          detail: { type: 'string' },
          instance: { type: 'string', description: 'Path of the request.' },
          requestId: { type: 'string', description: 'Same as the X-Request-Id response header.' },
          errors: {
            type: 'array',
            items: {
              type: 'object',
              required: ['path', 'message'],
              properties: { path: { type: 'string' }, message: { type: 'string' } },
            },
          },
        },
      },
      CreateAgentRequest: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          name: {
            type: 'string',
            minLength: 1,
            maxLength: 63,
            pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$',
            description: 'A DNS label: lower-case letters, digits and inner hyphens.',
          },
          location: { type: 'string', pattern: '^[a-z0-9-]{1,32}$', description: 'Hetzner location, e.g. fsn1.' },
          serverType: { type: 'string', pattern: '^[a-z0-9-]{1,32}$', description: 'Hetzner server type, e.g. cx22.' },
        },
      },
      Agent: {
        type: 'object',
        required: ['id', 'name', 'status', 'createdAt', 'updatedAt'],
        properties: {
          id: uuid,
          name: { type: 'string' },
          status: { type: 'string', enum: [...AGENT_STATUSES] },
          createdAt: dateTime,
          updatedAt: dateTime,
        },
      },
      Instance: {
        type: 'object',
        required: ['id', 'agentId', 'status', 'serverType', 'image', 'createdAt', 'updatedAt'],
        properties: {
          id: uuid,
          agentId: uuid,
          status: { type: 'string', enum: [...INSTANCE_STATUSES] },
          serverId: { type: ['string', 'null'], description: 'Hetzner server id (int64 as a string).' },
          serverName: { type: ['string', 'null'] },
          serverIp: { type: ['string', 'null'] },
          tailscaleDeviceId: { type: ['string', 'null'] },
          tailscaleIp: { type: ['string', 'null'] },
          tailscaleHostname: { type: ['string', 'null'] },
          location: { type: ['string', 'null'] },
          serverType: { type: 'string' },
          image: { type: 'string' },
          error: { type: ['string', 'null'] },
          startedAt: nullableDateTime,
          stoppedAt: nullableDateTime,
          destroyedAt: nullableDateTime,
          createdAt: dateTime,
          updatedAt: dateTime,
        },
      },
      ProvisioningJob: {
        type: 'object',
        required: ['id', 'agentId', 'instanceId', 'status', 'attempts', 'createdAt', 'updatedAt'],
        properties: {
          id: uuid,
          agentId: uuid,
          instanceId: uuid,
          status: { type: 'string', enum: [...PROVISIONING_JOB_STATUSES] },
          attempts: { type: 'integer' },
          error: { type: ['string', 'null'] },
          failedStep: { type: ['string', 'null'] },
          startedAt: nullableDateTime,
          finishedAt: nullableDateTime,
          createdAt: dateTime,
          updatedAt: dateTime,
        },
      },
      Operation: {
        type: 'object',
        required: ['id', 'type', 'status', 'attempts', 'progress', 'requestedAt', 'updatedAt'],
        properties: {
          id: uuid,
          type: { type: 'string', enum: [...OPERATION_TYPES] },
          status: { type: 'string', enum: [...OPERATION_STATUSES] },
          agentId: { type: ['string', 'null'], format: 'uuid' },
          provisioningJobId: { type: ['string', 'null'], format: 'uuid' },
          idempotencyKey: { type: ['string', 'null'], description: 'The Idempotency-Key the request carried.' },
          queueJobId: { type: ['string', 'null'] },
          attempts: { type: 'integer' },
          progress: { type: 'integer', minimum: 0, maximum: 100 },
          currentStep: { type: ['string', 'null'] },
          error: { type: ['string', 'null'] },
          failedStep: { type: ['string', 'null'] },
          requestedAt: dateTime,
          startedAt: nullableDateTime,
          finishedAt: nullableDateTime,
          updatedAt: dateTime,
        },
      },
      Event: {
        type: 'object',
        required: ['id', 'entityType', 'entityId', 'toStatus', 'reason', 'at'],
        properties: {
          id: { type: 'string', description: 'Monotonic (bigint as a string).' },
          entityType: { type: 'string', enum: [...EVENT_ENTITY_TYPES] },
          entityId: uuid,
          agentId: { type: ['string', 'null'], format: 'uuid' },
          fromStatus: { type: ['string', 'null'] },
          toStatus: {
            type: 'string',
            description:
              'The status the row moved to; for a guarded cloud call (fromStatus null) what happened to the resource: server_deleted, server_powered_off, device_deleted, auth_key_revoked, image_deleted, or needs_attention (refused), with the evidence in `reason`.',
          },
          reason: { type: 'string' },
          operationId: { type: ['string', 'null'], format: 'uuid' },
          at: dateTime,
        },
      },
      OperationPage: {
        type: 'object',
        required: ['items', 'limit', 'nextCursor'],
        properties: {
          items: { type: 'array', items: ref('Operation') },
          limit: { type: 'integer' },
          nextCursor: { type: ['string', 'null'], description: 'Pass as `cursor` for the next page; null on the last.' },
        },
      },
      CreateTokenRequest: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'scope'],
        properties: {
          name: { type: 'string', pattern: `^[A-Za-z0-9][A-Za-z0-9._-]{0,${TOKEN_NAME_MAX_LENGTH - 1}}$` },
          scope: { type: 'string', enum: [...TOKEN_SCOPES] },
          expiresAt: { ...nullableDateTime, description: 'After this time the token gets 401. Omitted: never expires.' },
        },
      },
      Token: {
        type: 'object',
        required: ['id', 'name', 'scope', 'tokenPrefix', 'createdAt', 'expiresAt', 'revokedAt', 'lastUsedAt'],
        properties: {
          id: uuid,
          name: { type: 'string' },
          scope: { type: 'string', enum: [...TOKEN_SCOPES] },
          tokenPrefix: { type: 'string', description: 'The first characters of the secret, to tell tokens apart.' },
          createdAt: dateTime,
          expiresAt: nullableDateTime,
          revokedAt: nullableDateTime,
          lastUsedAt: { ...nullableDateTime, description: 'Recorded at most once a minute.' },
        },
      },
      TokenCreated: {
        allOf: [
          ref('Token'),
          {
            type: 'object',
            required: ['token'],
            properties: { token: { type: 'string', description: 'The secret. Shown only in this answer.' } },
          },
        ],
      },
      TokenList: {
        type: 'object',
        required: ['items'],
        properties: { items: { type: 'array', items: ref('Token') } },
      },
      JobRef: {
        type: 'object',
        required: ['queue', 'id'],
        properties: { queue: { type: 'string', enum: [...OPERATION_QUEUES, 'reconcile'] }, id: { type: 'string' } },
      },
      QueueJob: {
        type: 'object',
        required: ['queue', 'id', 'state'],
        properties: {
          queue: { type: 'string' },
          id: { type: 'string' },
          state: {
            type: 'string',
            enum: ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed', 'not_retained', 'unavailable'],
          },
          progress: {},
          attemptsMade: { type: 'integer' },
          failedReason: { type: ['string', 'null'] },
          createdAt: nullableDateTime,
          processedAt: nullableDateTime,
          finishedAt: nullableDateTime,
        },
      },
      AgentCreated: {
        type: 'object',
        required: ['agent', 'instance', 'operation', 'provisioningJob', 'job', 'links'],
        properties: {
          agent: ref('Agent'),
          instance: ref('Instance'),
          operation: ref('Operation'),
          provisioningJob: ref('ProvisioningJob'),
          job: ref('JobRef'),
          links: ref('Links'),
        },
      },
      CommandAccepted: {
        type: 'object',
        required: ['operation', 'job', 'links'],
        properties: { operation: ref('Operation'), job: ref('JobRef'), links: ref('Links') },
      },
      Links: {
        type: 'object',
        additionalProperties: { type: 'string' },
        properties: { self: { type: 'string' }, agent: { type: 'string' }, operation: { type: 'string' }, events: { type: 'string' } },
      },
      AgentSummary: {
        allOf: [ref('Agent'), { type: 'object', required: ['instance'], properties: { instance: nullable(ref('Instance')) } }],
      },
      AgentPage: {
        type: 'object',
        required: ['items', 'limit', 'nextCursor'],
        properties: {
          items: { type: 'array', items: ref('AgentSummary') },
          limit: { type: 'integer' },
          offset: { type: 'integer' },
          nextCursor: { type: ['string', 'null'] },
        },
      },
      AgentDetail: {
        type: 'object',
        required: ['agent', 'instance', 'operation', 'links'],
        properties: {
          agent: ref('Agent'),
          instance: { ...nullable(ref('Instance')), description: 'The live instance, else the most recent one.' },
          operation: { ...nullable(ref('Operation')), description: 'The most recent queued or running operation.' },
          links: ref('Links'),
        },
      },
      EventPage: {
        type: 'object',
        required: ['items', 'nextCursor'],
        properties: { items: { type: 'array', items: ref('Event') }, nextCursor: { type: ['string', 'null'] } },
      },
      OperationDetail: {
        type: 'object',
        required: ['operation', 'job', 'links'],
        properties: { operation: ref('Operation'), job: nullable(ref('QueueJob')), links: ref('Links') },
      },
      Health: { type: 'object', properties: { status: { type: 'string', const: 'ok' } } },
      Readiness: {
        type: 'object',
        required: ['status', 'postgres', 'redis'],
        properties: {
          status: { type: 'string', enum: ['ready', 'unavailable'] },
          postgres: { type: 'boolean' },
          redis: { type: 'boolean' },
        },
      },
    },
  },
} as const;
