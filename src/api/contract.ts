import { z } from 'zod';
import type { TokenScope } from '../entities';
import { AGENT_COMMAND_TYPES, commandOf, type AgentCommand, type AgentCommandType } from '../operations/types';
import {
  agentCreatedSchema,
  agentDetailSchema,
  agentPageSchema,
  activityAnswerSchema,
  agentSchema,
  bootstrapBody,
  createLeaseBody,
  extendBody,
  getAgentQuery,
  heartbeatBody,
  leaseListSchema,
  leaseSchema,
  renewLeaseBody,
  commandAcceptedSchema,
  createAgentBody,
  createTokenBody,
  eventPageSchema,
  healthSchema,
  listAgentsQuery,
  listEventsQuery,
  listOperationsQuery,
  listTokensQuery,
  operationDetailSchema,
  operationPageSchema,
  readinessSchema,
  fleetCostSchema,
  reconcileReportAnswerSchema,
  requestComponents,
  responseComponents,
  tokenCreatedSchema,
  tokenListSchema,
} from './schemas';
import {
  createWebhookBody,
  eventStreamQuery,
  getOperationQuery,
  listDeliveriesQuery,
  webhookCreatedSchema,
  webhookDeliveryPageSchema,
  webhookListSchema,
  webhookSchema,
} from './webhook.schemas';

/**
 * The route registry: every route of the API with its schemas, scope and answers, in one place.
 * The OpenAPI 3.1 document served at GET /v1/openapi.json is generated from it (and from the zod
 * schemas in schemas.ts), and routers serve handlers by an entry's operationId (routing.ts), so a
 * route is declared once, here; the API tests check that every registered route is served, and
 * validate real answers against the generated document.
 */

type Method = 'get' | 'post' | 'patch' | 'delete';

export interface ApiResponse {
  description: string;
  /** A zod schema (registered ones become $refs), or 'problem' for an RFC 9457 document. */
  schema?: z.ZodType | 'problem';
  /** Defaults to application/json (application/problem+json for problems). */
  contentType?: string;
  headers?: Record<string, { description: string; schema: Record<string, unknown> }>;
}

export interface ApiRoute {
  method: Method;
  /** OpenAPI path template, e.g. /v1/agents/{id}. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: 'agents' | 'pools' | 'operations' | 'provisioning' | 'tokens' | 'events' | 'webhooks' | 'system';
  /**
   * The token scope the route needs (checked before its handler runs: see routing.ts, which serves
   * each handler at the path and scope of its entry); 'public' for routes without a token; or the
   * security requirements verbatim.
   */
  auth: TokenScope | 'public' | Array<Record<string, string[]>>;
  /** Path parameters by name: a description (the parameter is a UUID), or a description and its JSON Schema. */
  params?: Record<string, string | { description: string; schema: Record<string, unknown> }>;
  query?: z.ZodObject;
  /** Extra header parameters (e.g. Idempotency-Key). */
  headers?: Array<Record<string, unknown>>;
  body?: z.ZodType;
  responses: Record<string, ApiResponse>;
  /** Served only when the app mounts this optional feature. */
  feature?: 'reconcile' | 'cost';
}

export const problem = (description: string): ApiResponse => ({ description, schema: 'problem' });
export const json = (description: string, schema: z.ZodType, headers?: ApiResponse['headers']): ApiResponse => ({
  description,
  schema,
  ...(headers ? { headers } : {}),
});

export const idempotencyKeyHeader = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Makes the request safe to retry: the same key returns the operation it created first (200) instead of ' +
    'creating another. Reusing a key for a different request is a 422. 1–200 visible ASCII characters.',
  schema: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7E]+$' },
};

const commandResponses = (what: string, refusal?: string): Record<string, ApiResponse> => ({
  '200': json('Replay of an earlier request with the same Idempotency-Key: the operation it created.', commandAcceptedSchema),
  '202': json(`${what} queued.`, commandAcceptedSchema),
  '400': problem('Malformed id, body or Idempotency-Key.'),
  '404': problem('Unknown agent.'),
  '409': problem(refusal ? `The current state does not allow it ("${refusal}").` : 'The current state does not allow it.'),
  '415': problem('A body was sent that is not JSON.'),
  '422': problem('Idempotency-Key already used for a different request.'),
});

/** The operationId of an agent command's route: its handler is served under it (routing.ts). */
export const commandOperationId = (verb: AgentCommandType) => `${verb}Agent`;

const agentCommand = (verb: AgentCommandType, rule: AgentCommand): ApiRoute => ({
  method: 'post',
  path: `/v1/agents/{id}/${verb}`,
  operationId: commandOperationId(verb),
  summary: rule.summary,
  description: rule.description,
  tag: 'agents',
  auth: rule.scope,
  params: { id: 'Agent id.' },
  headers: [idempotencyKeyHeader],
  responses: commandResponses(`The ${verb} operation was`, 'refusal' in rule ? rule.refusal : undefined),
});

const routes: ApiRoute[] = [];

/** Adds a route to the contract (call at module load, beside the other registrations). */
export function registerRoute(route: ApiRoute): ApiRoute {
  if (routes.some((r) => r.method === route.method && r.path === route.path)) {
    throw new Error(`${route.method.toUpperCase()} ${route.path} is registered twice`);
  }
  routes.push(route);
  return route;
}

/** Every registered route (the optional features included). */
export function registeredRoutes(): readonly ApiRoute[] {
  return routes;
}

// ---------------------------------------------------------------------------------------------
// Agents

registerRoute({
  method: 'post',
  path: '/v1/agents',
  operationId: 'createAgent',
  summary: 'Create an agent and queue its provision',
  tag: 'agents',
  auth: 'operate',
  headers: [idempotencyKeyHeader],
  body: createAgentBody,
  responses: {
    '201': json('Agent, instance and provisioning job created; provision queued.', agentCreatedSchema, {
      Location: { description: 'URL of the new agent.', schema: { type: 'string' } },
    }),
    '200': json('Replay of an earlier request with the same Idempotency-Key.', agentCreatedSchema),
    '400': problem('Malformed JSON or invalid fields (every problem is listed in `errors`).'),
    '409': problem(
      'Another agent that is not destroyed has this name (type name-taken, `agentId` names it), or MAX_AGENTS agents ' +
        'exist already (type quota-exceeded, `limit`).',
    ),
    '413': problem('Body larger than 64 KiB.'),
    '415': problem('Content-Type is not application/json.'),
    '422': problem(
      'Idempotency-Key already used for a different request, or the cloud does not offer the server type in the ' +
        'location (type unavailable-server-spec; `errors` names serverType or location).',
    ),
  },
});

registerRoute({
  method: 'get',
  path: '/v1/agents',
  operationId: 'listAgents',
  summary: 'List agents, newest first',
  description:
    'Keyset pagination with `cursor` (pass `nextCursor` from the previous page) or offset pagination ' +
    'with `offset`; not both.',
  tag: 'agents',
  auth: 'read',
  query: listAgentsQuery,
  responses: {
    '200': json('One page of agents with their current instance.', agentPageSchema),
    '400': problem('Invalid query parameters.'),
  },
});

registerRoute({
  method: 'get',
  path: '/v1/agents/{id}',
  operationId: 'getAgent',
  summary: 'An agent with its current instance and its queued or running operation',
  description:
    'With `wait=ready` the answer comes once the agent is `ready` (running, joined, and its own cloud-init finished when ' +
    'a reporter is installed), once it cannot become ready (destroyed, in error, or its bootstrap failed), or when ' +
    '`timeout` seconds have passed — then as it is.',
  tag: 'agents',
  auth: 'read',
  params: { id: 'Agent id.' },
  query: getAgentQuery,
  responses: {
    '200': json('The agent.', agentDetailSchema),
    '400': problem('The id is not a UUID, or the query is invalid.'),
    '404': problem('Unknown agent.'),
    '429': problem('With `wait`: as many long polls are open as allowed (LONG_POLL_MAX_PER_TOKEN, LONG_POLL_MAX_CONNECTIONS).'),
  },
});

registerRoute({
  method: 'get',
  path: '/v1/agents/{id}/events',
  operationId: 'listAgentEvents',
  summary: 'Audit trail of every status change of the agent and its instances, jobs and operations',
  tag: 'agents',
  auth: 'read',
  params: { id: 'Agent id.' },
  query: listEventsQuery,
  responses: {
    '200': json('Events, oldest first.', eventPageSchema),
    '400': problem('The id or a query parameter is invalid.'),
    '404': problem('Unknown agent.'),
  },
});

// The commands the operation descriptors declare (src/operations/types).
for (const type of AGENT_COMMAND_TYPES) registerRoute(agentCommand(type, commandOf(type)));

registerRoute({
  method: 'post',
  path: '/v1/agents/{id}/reprovision',
  operationId: 'reprovisionAgent',
  summary: 'Give an agent in error a fresh instance, made from the same spec',
  description:
    'For an agent whose provision failed (and was rolled back) or was cancelled: a new instance, provisioning job ' +
    'and provision operation, with the server type, location, image, SSH keys, labels and cloud-init it was created with.',
  tag: 'agents',
  auth: 'operate',
  params: { id: 'Agent id.' },
  headers: [idempotencyKeyHeader],
  responses: {
    '202': json('New instance created; provision queued.', agentCreatedSchema),
    '200': json('Replay of an earlier request with the same Idempotency-Key.', agentCreatedSchema),
    '400': problem('Malformed id or Idempotency-Key.'),
    '404': problem('Unknown agent.'),
    '409': problem('The agent is not in error, or still has a live instance.'),
    '415': problem('A body was sent that is not JSON.'),
    '422': problem('Idempotency-Key already used for a different request, or the cloud no longer offers the server type there.'),
  },
});

// ---------------------------------------------------------------------------------------------
// Activity, leases, expiry (src/policy)

const agentReport = {
  '400': problem('Malformed id or body.'),
  '403': problem("An agent's credential used for another agent (or a read token)."),
  '404': problem('Unknown agent.'),
  '409': problem('The agent is destroyed.'),
  '415': problem('The body is not JSON.'),
};

/** A report of the agent's machine (POST /v1/agents/{id}/<what>): it answers the activity recorded. */
const agentReportRoute = (what: string, route: Pick<ApiRoute, 'operationId' | 'summary' | 'description' | 'body'>) =>
  registerRoute({
    method: 'post',
    path: `/v1/agents/{id}/${what}`,
    ...route,
    tag: 'agents',
    auth: 'agent',
    params: { id: 'Agent id.' },
    responses: { '200': json('Recorded.', activityAnswerSchema), ...agentReport },
  });

agentReportRoute('heartbeat', {
  operationId: 'agentHeartbeat',
  summary: "The agent's machine reports its activity (every minute, from its reporter)",
  description:
    "Takes the agent's own credential (scope agent, made at provision) or an operate token. Busy, or with a session, the " +
    'heartbeat is activity: the idle ladder counts from it.',
  body: heartbeatBody,
});

agentReportRoute('bootstrap', {
  operationId: 'agentBootstrap',
  summary: "The agent's machine reports how its own cloud-init ended",
  description: "Takes the agent's own credential or an operate token. `done` makes a joined agent `ready`.",
  body: bootstrapBody,
});

registerRoute({
  method: 'post',
  path: '/v1/agents/{id}/leases',
  operationId: 'createLease',
  summary: 'Take a lease: while it is live the agent is never stopped for idleness, expired or claimed',
  description: "Takes an operate token or the agent's own credential (a job on the machine holding it).",
  tag: 'agents',
  auth: 'agent',
  params: { id: 'Agent id.' },
  body: createLeaseBody,
  responses: {
    '201': json('The lease.', leaseSchema, { Location: { description: 'URL of the lease (renew: POST …/renew, release: DELETE).', schema: { type: 'string' } } }),
    ...agentReport,
  },
});

registerRoute({
  method: 'get',
  path: '/v1/agents/{id}/leases',
  operationId: 'listLeases',
  summary: "The agent's live leases, soonest to expire first",
  tag: 'agents',
  auth: 'read',
  params: { id: 'Agent id.' },
  responses: { '200': json('Live leases.', leaseListSchema), '400': problem('The id is not a UUID.'), '404': problem('Unknown agent.') },
});

registerRoute({
  method: 'post',
  path: '/v1/agents/{id}/leases/{leaseId}/renew',
  operationId: 'renewLease',
  summary: 'Renew a live lease: it lives `ttlSeconds` from now',
  tag: 'agents',
  auth: 'agent',
  params: { id: 'Agent id.', leaseId: 'Lease id.' },
  body: renewLeaseBody,
  responses: {
    '200': json('The renewed lease.', leaseSchema),
    ...agentReport,
    '404': problem('Unknown agent or lease.'),
    '409': problem('The lease was released or has expired (take a new one).'),
  },
});

registerRoute({
  method: 'delete',
  path: '/v1/agents/{id}/leases/{leaseId}',
  operationId: 'releaseLease',
  summary: 'Release a lease (releasing a released lease changes nothing)',
  description: 'Idle time counts from the release.',
  tag: 'agents',
  auth: 'agent',
  params: { id: 'Agent id.', leaseId: 'Lease id.' },
  responses: {
    '200': json('The released lease.', leaseSchema),
    '400': problem('Malformed id.'),
    '403': problem("An agent's credential used for another agent (or a read token)."),
    '404': problem('Unknown agent or lease.'),
  },
});

registerRoute({
  method: 'post',
  path: '/v1/agents/{id}/extend',
  operationId: 'extendAgent',
  summary: "Move the agent's expiry",
  description:
    'The agent now expires `ttlSeconds` from now or at `expiresAt` — earlier or later than before — and is warned again ' +
    '(`agent.expiring`) EXPIRY_WARNING_SECONDS before the new time. Recorded in its audit trail.',
  tag: 'agents',
  auth: 'operate',
  params: { id: 'Agent id.' },
  body: extendBody,
  responses: {
    '200': json('The agent with its new expiry.', agentSchema),
    '400': problem('Malformed id or body.'),
    '404': problem('Unknown agent.'),
    '409': problem('The agent is destroyed.'),
    '415': problem('The body is not JSON.'),
    '422': problem('Later than MAX_AGENT_LIFETIME_HOURS after the agent was created (type lifetime-exceeded, `latest`).'),
  },
});

// ---------------------------------------------------------------------------------------------
// Provisioning jobs and operations

registerRoute({
  method: 'post',
  path: '/v1/operations/{id}/cancel',
  operationId: 'cancelOperation',
  summary: 'Cancel an operation that is still queued',
  description:
    'The operation becomes `cancelled` and its queue job is removed; a delivery already under way finds it ' +
    'cancelled and does nothing. A cancelled provision fails its instance and leaves the agent in `error` ' +
    '(reprovision or destroy it).',
  tag: 'operations',
  auth: 'operate',
  params: { id: 'Operation id.' },
  responses: {
    '200': json('Cancelled.', commandAcceptedSchema),
    '400': problem('The id is not a UUID.'),
    '404': problem('Unknown operation.'),
    '409': problem('The operation is no longer queued (running or finished).'),
    '415': problem('A body was sent that is not JSON.'),
  },
});

registerRoute({
  method: 'post',
  path: '/v1/provisioning-jobs/{id}/rollback',
  operationId: 'rollbackProvisioningJob',
  summary: 'Roll back a failed provision (exactly once per provisioning job)',
  description:
    'Deletes every server and tailnet device the provision left behind. There is at most one rollback ' +
    'operation per provisioning job: asking again returns it (200).',
  tag: 'provisioning',
  auth: 'operate',
  params: { id: 'Provisioning job id.' },
  headers: [idempotencyKeyHeader],
  responses: {
    ...commandResponses('The rollback was'),
    '404': problem('Unknown provisioning job ("Job <id> not found").'),
    '409': problem('The provisioning job has not failed (it is queued, running or succeeded).'),
  },
});

registerRoute({
  method: 'get',
  path: '/v1/operations/{id}',
  operationId: 'getOperation',
  summary: 'State, progress, attempts and error of an operation',
  description:
    'PostgreSQL is the source of truth; `job` adds what BullMQ still retains about the queue job ' +
    '(state `not_retained` once retention removed it, `unavailable` while Redis is down).',
  tag: 'operations',
  auth: 'read',
  params: { id: 'Operation id.' },
  query: getOperationQuery,
  responses: {
    '200': json('The operation (with `wait`: once it is final, or as it is when the time runs out).', operationDetailSchema),
    '400': problem('The id is not a UUID, or `wait` is not 0–60.'),
    '404': problem('Unknown operation.'),
    '429': problem('With `wait`: the token, or the server, already holds as many long polls as allowed (LONG_POLL_MAX_PER_TOKEN, LONG_POLL_MAX_CONNECTIONS); `Retry-After` says when to try again, a read without `wait` is always answered.'),
  },
});

registerRoute({
  method: 'get',
  path: '/v1/operations',
  operationId: 'listOperations',
  summary: 'List operations, newest first',
  description:
    'Keyset pagination on (requestedAt, id): pass `nextCursor` from the previous page as `cursor`. ' +
    'Filters combine with AND; `status` and `type` take comma-separated lists.',
  tag: 'operations',
  auth: 'read',
  query: listOperationsQuery,
  responses: {
    '200': json('One page of operations.', operationPageSchema),
    '400': problem('Invalid query parameters.'),
  },
});

// ---------------------------------------------------------------------------------------------
// Admin-only collections: tokens here, webhooks with the events below

/** A route of an admin-only collection: its tag, and the admin scope. */
const adminRoute = (tag: 'tokens' | 'webhooks') => (route: Omit<ApiRoute, 'tag' | 'auth'>) => registerRoute({ ...route, tag, auth: 'admin' });
const tokenRoute = adminRoute('tokens');
const webhookRoute = adminRoute('webhooks');

/** A route on one subscription, by its id: a malformed id is a 400 (unless the route says more), an unknown one a 404. */
const subscriptionRoute = (route: Omit<ApiRoute, 'tag' | 'auth' | 'params'>) =>
  webhookRoute({
    ...route,
    params: { id: 'Subscription id.' },
    responses: { '400': problem('The id is not a UUID.'), ...route.responses, '404': problem('Unknown subscription.') },
  });

tokenRoute({
  method: 'post',
  path: '/v1/tokens',
  operationId: 'createToken',
  summary: 'Create a named API token; its secret is in this answer only',
  description:
    'The secret (`tf_` + 43 characters) is stored only as its SHA-256, so it cannot be shown again: ' +
    'keep it from this answer. Names are unique among tokens that are not revoked; `bootstrap` is ' +
    'reserved for API_TOKEN.',
  body: createTokenBody,
  responses: {
    '201': json('The token, with its secret.', tokenCreatedSchema),
    '400': problem('Invalid fields (every problem is listed in `errors`).'),
    '409': problem('A token that is not revoked already has this name.'),
    '415': problem('Content-Type is not application/json.'),
    '422': problem('The name is reserved: `system` or `bootstrap`, in any case (type `name-reserved`).'),
  },
});

tokenRoute({
  method: 'get',
  path: '/v1/tokens',
  operationId: 'listTokens',
  summary: 'List API tokens (never their secrets or hashes), newest first',
  query: listTokensQuery,
  responses: {
    '200': json('The tokens.', tokenListSchema),
    '400': problem('Invalid query parameters.'),
  },
});

tokenRoute({
  method: 'delete',
  path: '/v1/tokens/{id}',
  operationId: 'revokeToken',
  summary: 'Revoke a token: the next request that carries it gets a 401',
  params: { id: 'Token id.' },
  responses: {
    '204': { description: 'Revoked (or already revoked).' },
    '400': problem('The id is not a UUID.'),
    '404': problem('Unknown token.'),
  },
});

// ---------------------------------------------------------------------------------------------
// Fleet cost (mounted by processes that read prices)

registerRoute({
  method: 'get',
  path: '/v1/fleet/cost',
  operationId: 'getFleetCost',
  summary: 'What the fleet costs per month, and what hibernation saves',
  description:
    "From the cloud's own prices (GET /pricing and the server types' per-location prices, cached for an hour). " +
    'A server is billed while it exists, running or off, with its primary IPv4 address; a hibernated agent ' +
    "pays for its snapshot only. `potentialSaving` assumes each paused agent's snapshot as large as its disk.",
  tag: 'agents',
  auth: 'read',
  feature: 'cost',
  responses: {
    '200': json('Monthly amounts.', fleetCostSchema),
    '503': problem("The cloud's price list cannot be read right now."),
  },
});

// ---------------------------------------------------------------------------------------------
// Reconcile (mounted by processes that run the reconciler)

registerRoute({
  method: 'get',
  path: '/v1/reconcile',
  operationId: 'getReconcileReport',
  summary: 'Latest drift / orphan report (written by whichever worker ran the pass)',
  tag: 'system',
  auth: 'read',
  feature: 'reconcile',
  responses: {
    '200': json('The latest report.', reconcileReportAnswerSchema),
    '404': problem('No pass has finished yet.'),
  },
});

registerRoute({
  method: 'post',
  path: '/v1/reconcile',
  operationId: 'requestReconcilePass',
  summary: 'Queue one reconcile pass now',
  tag: 'system',
  auth: 'operate',
  feature: 'reconcile',
  responses: {
    '202': json('Pass queued.', commandAcceptedSchema),
    '200': json('A pass is already queued: that one.', commandAcceptedSchema),
  },
});

// ---------------------------------------------------------------------------------------------
// Event stream and webhooks

registerRoute({
  method: 'get',
  path: '/v1/events/stream',
  operationId: 'streamEvents',
  summary: 'Every event as it is written, as Server-Sent Events',
  description:
    'Each message has `id:` = the event id and `data:` = the event (as in GET /v1/agents/{id}/events). ' +
    'Reconnect with `Last-Event-ID` to receive every event after that id, then the live ones, without gaps ' +
    'or repeats; without it the stream starts at the newest event. Comments (`: heartbeat`) keep the ' +
    'connection open. A client that reads too slowly (more than EVENT_STREAM_MAX_BUFFER_BYTES waiting for it) ' +
    'and a server shutting down end the stream with `event: reconnect` and `data: {"reason":…,"lastEventId":…}`: ' +
    'reconnect with that `Last-Event-ID` to go on where it stopped.',
  tag: 'events',
  auth: 'read',
  query: eventStreamQuery,
  headers: [
    {
      name: 'Last-Event-ID',
      in: 'header',
      required: false,
      description: 'Resume after this event id.',
      schema: { type: 'string', pattern: '^[0-9]{1,18}$' },
    },
  ],
  responses: {
    '200': { description: 'The stream (text/event-stream), open until the client disconnects.', schema: z.string(), contentType: 'text/event-stream' },
    '400': problem('Invalid agentId or Last-Event-ID.'),
    '429': problem('The token, or the server, already has as many streams open as allowed (EVENT_STREAM_MAX_PER_TOKEN, EVENT_STREAM_MAX_CONNECTIONS); `Retry-After` says when to try again.'),
  },
});

webhookRoute({
  method: 'post',
  path: '/v1/webhooks',
  operationId: 'createWebhook',
  summary: 'Subscribe a URL to events; the signing secret is in this answer only',
  description:
    'Each matching event is POSTed as `{type, timestamp, data}`, signed as the Standard Webhooks ' +
    'specification says (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), ' +
    'and retried with exponential backoff for more than a day until the receiver answers 2xx within 10 s. ' +
    'URLs that resolve to loopback, private or link-local addresses are refused unless the deployment sets ' +
    'WEBHOOK_ALLOW_PRIVATE_URLS=true.',
  body: createWebhookBody,
  responses: {
    '201': json('The subscription, with its secret.', webhookCreatedSchema, {
      Location: { description: 'URL of the subscription.', schema: { type: 'string' } },
    }),
    '400': problem('Invalid fields, or a URL that is refused or does not resolve.'),
    '415': problem('Content-Type is not application/json.'),
  },
});

webhookRoute({
  method: 'get',
  path: '/v1/webhooks',
  operationId: 'listWebhooks',
  summary: 'List webhook subscriptions (never their secrets), newest first',
  responses: { '200': json('The subscriptions.', webhookListSchema) },
});

subscriptionRoute({
  method: 'get',
  path: '/v1/webhooks/{id}',
  operationId: 'getWebhook',
  summary: 'A webhook subscription',
  responses: { '200': json('The subscription.', webhookSchema) },
});

subscriptionRoute({
  method: 'delete',
  path: '/v1/webhooks/{id}',
  operationId: 'deleteWebhook',
  summary: 'Delete a subscription and its deliveries (retries still queued send nothing)',
  responses: { '204': { description: 'Deleted.' } },
});

subscriptionRoute({
  method: 'get',
  path: '/v1/webhooks/{id}/deliveries',
  operationId: 'listWebhookDeliveries',
  summary: "A subscription's deliveries with every attempt's status, duration and error, newest first",
  query: listDeliveriesQuery,
  responses: {
    '200': json('One page of deliveries.', webhookDeliveryPageSchema),
    '400': problem('The id or a query parameter is invalid.'),
  },
});

// ---------------------------------------------------------------------------------------------
// System

registerRoute({
  method: 'get',
  path: '/v1/openapi.json',
  operationId: 'getOpenApiDocument',
  summary: 'This document',
  tag: 'system',
  auth: 'public',
  responses: { '200': json('OpenAPI 3.1 document.', z.looseObject({ openapi: z.string() })) },
});

registerRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'liveness',
  summary: 'Liveness: the process serves HTTP',
  tag: 'system',
  auth: 'public',
  responses: { '200': json('Alive.', healthSchema) },
});

registerRoute({
  method: 'get',
  path: '/readyz',
  operationId: 'readiness',
  summary: 'Readiness: PostgreSQL and Redis answer, and no cloud refuses the credentials',
  description: 'Public. An admin token (Bearer) adds the details: each dependency, the credential states and the settings to fix.',
  tag: 'system',
  auth: 'public',
  responses: {
    '200': json('Ready.', readinessSchema),
    '503': json('A dependency is down.', readinessSchema),
  },
});

registerRoute({
  method: 'get',
  path: '/metrics',
  operationId: 'metrics',
  summary: 'Prometheus metrics, including job counts per queue and state',
  description:
    'Open unless METRICS_TOKEN is set; then `Authorization: Bearer <METRICS_TOKEN>` is required. With METRICS_PORT set it is ' +
    'served on that listener instead of this one.',
  tag: 'system',
  auth: 'public',
  responses: {
    '200': { description: 'Prometheus text exposition format.', schema: z.string(), contentType: 'text/plain' },
    '401': problem('METRICS_TOKEN is set and the request does not carry it.'),
  },
});

registerRoute({
  method: 'get',
  path: '/admin/queues',
  operationId: 'bullBoard',
  summary: 'Bull Board dashboard (HTML; its JSON API lives below /admin/queues/api)',
  description:
    'Opens with the board login (BULL_BOARD_USER / BULL_BOARD_PASSWORD, when both are set) or an admin ' +
    'token: as a Bearer token, or as the Basic password with any user name.',
  tag: 'system',
  auth: [{ basicAuth: [] }, { bearerAuth: ['admin'] }],
  responses: {
    '200': { description: 'Dashboard.', schema: z.string(), contentType: 'text/html' },
    '401': problem('Missing or wrong credentials (WWW-Authenticate: Basic).'),
    '403': problem('A valid token without scope admin.'),
  },
});

// ---------------------------------------------------------------------------------------------
// The document

const COMPONENT_REF = '#/components/schemas/';

type JsonSchema = Record<string, unknown>;

// Formats say it well enough: zod's own patterns for uuid and date-time would only add noise.
const dropFormatPattern = (ctx: { jsonSchema: JsonSchema }) => {
  if (typeof ctx.jsonSchema.format === 'string' && ctx.jsonSchema.pattern !== undefined) delete ctx.jsonSchema.pattern;
};

function stripMeta(schema: JsonSchema): JsonSchema {
  const { $schema: _s, $id: _i, ...rest } = schema;
  return rest;
}

/**
 * A schema as JSON Schema 2020-12: a registered component becomes a reference, anything else is
 * written out in place (so a route's schema that contains components should be registered too).
 */
function jsonSchemaOf(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const registry = io === 'input' ? requestComponents : responseComponents;
  const id = registry.get(schema)?.id;
  if (id) return { $ref: COMPONENT_REF + id };
  return stripMeta(
    z.toJSONSchema(schema, {
      io,
      unrepresentable: 'any',
      override: dropFormatPattern,
    }) as JsonSchema,
  );
}

function components(): Record<string, JsonSchema> {
  const out: Record<string, JsonSchema> = {};
  for (const [registry, io] of [
    [responseComponents, 'output'],
    [requestComponents, 'input'],
  ] as const) {
    const { schemas } = z.toJSONSchema(registry, {
      io,
      unrepresentable: 'any',
      override: dropFormatPattern,
      uri: (id) => COMPONENT_REF + id,
    });
    for (const [id, schema] of Object.entries(schemas)) out[id] = stripMeta(schema as JsonSchema);
  }
  return out;
}

function queryParameters(query: z.ZodObject): Array<Record<string, unknown>> {
  const schema = z.toJSONSchema(query, { io: 'input', unrepresentable: 'any', override: dropFormatPattern }) as {
    properties?: Record<string, JsonSchema>;
    required?: string[];
  };
  return Object.entries(schema.properties ?? {}).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: 'query',
      required: schema.required?.includes(name) ?? false,
      ...(description ? { description } : {}),
      schema: rest,
    };
  });
}

const COMMON_ERRORS: Record<string, ApiResponse> = {
  '401': problem('Missing, unknown, revoked or expired bearer token.'),
  '500': problem('Unexpected failure (never carries internal details).'),
  '503': problem('PostgreSQL or Redis is unavailable; nothing was changed. Retry later (see Retry-After).'),
};

function responsesOf(route: ApiRoute): Record<string, ApiResponse> {
  if (typeof route.auth !== 'string' || route.auth === 'public') return route.responses;
  // Every route refuses an agent's own credential (scope agent) but those it is for.
  const forbidden: Record<string, ApiResponse> =
    route.auth === 'read'
      ? { '403': problem("An agent's own credential (scope agent): it reports that agent's activity and reads nothing.") }
      : route.auth === 'agent'
        ? { '403': problem("An agent's credential used for another agent, or a read token.") }
        : { '403': problem(`The token lacks scope ${route.auth} (WWW-Authenticate: Bearer error="insufficient_scope").`) };
  return { ...COMMON_ERRORS, ...forbidden, ...route.responses };
}

function operationOf(route: ApiRoute) {
  const security =
    route.auth === 'public' ? [] : typeof route.auth === 'string' ? [{ bearerAuth: [route.auth] }] : route.auth;
  const parameters = [
    ...Object.entries(route.params ?? {}).map(([name, param]) => ({
      name,
      in: 'path',
      required: true,
      description: typeof param === 'string' ? param : param.description,
      schema: typeof param === 'string' ? { type: 'string', format: 'uuid' } : param.schema,
    })),
    ...(route.query ? queryParameters(route.query) : []),
    ...(route.headers ?? []),
  ];
  const responses = Object.fromEntries(
    Object.entries(responsesOf(route))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([status, r]) => {
        const contentType = r.contentType ?? (r.schema === 'problem' ? 'application/problem+json' : 'application/json');
        const schema = r.schema === 'problem' ? { $ref: `${COMPONENT_REF}Problem` } : r.schema ? jsonSchemaOf(r.schema, 'output') : undefined;
        return [
          status,
          {
            description: r.description,
            ...(r.headers ? { headers: r.headers } : {}),
            ...(schema ? { content: { [contentType]: { schema } } } : {}),
          },
        ];
      }),
  );
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.description ? { description: route.description } : {}),
    tags: [route.tag],
    security,
    ...(parameters.length ? { parameters } : {}),
    ...(route.body
      ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchemaOf(route.body, 'input') } } } }
      : {}),
    responses,
  };
}

export interface OpenApiDocument {
  openapi: string;
  info: Record<string, unknown>;
  paths: Record<string, Record<string, ReturnType<typeof operationOf>>>;
  components: { securitySchemes: Record<string, unknown>; schemas: Record<string, JsonSchema> };
  [key: string]: unknown;
}

/** The OpenAPI 3.1 document of an app; optional features are described only when that app mounts them. */
export function buildOpenApiDocument(opts: { reconcile?: boolean; cost?: boolean } = {}): OpenApiDocument {
  const paths: OpenApiDocument['paths'] = {};
  for (const route of routes) {
    if (route.feature === 'reconcile' && !opts.reconcile) continue;
    if (route.feature === 'cost' && !opts.cost) continue;
    (paths[route.path] ??= {})[route.method] = operationOf(route);
  }
  return {
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
      { name: 'pools', description: 'Pools of standby agents, kept stocked and handed over by claims.' },
      { name: 'operations', description: 'Accepted commands and their progress.' },
      { name: 'provisioning', description: 'Provisioning jobs.' },
      { name: 'tokens', description: 'Named API tokens and their scopes.' },
      { name: 'events', description: 'The live event stream.' },
      { name: 'webhooks', description: 'Signed webhooks: subscriptions and deliveries.' },
      { name: 'system', description: 'Health, readiness, metrics and this document.' },
    ],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description:
            "A named token from POST /v1/tokens, or the deployment's API_TOKEN (an admin named `bootstrap`). " +
            'Scopes nest: read (GET routes) ⊂ operate (commands, rollback, reconcile) ⊂ admin (tokens, webhooks, Bull Board). ' +
            'Each operation lists the scope it needs.',
        },
        basicAuth: {
          type: 'http',
          scheme: 'basic',
          description: 'BULL_BOARD_USER / BULL_BOARD_PASSWORD, or any user name with an admin token as the password.',
        },
      },
      schemas: components(),
    },
  };
}
