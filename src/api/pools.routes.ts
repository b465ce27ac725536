import express, { type Router } from 'express';
import { z } from 'zod';
import { POOL_NAME_MAX_LENGTH, STANDBY_MODES, type Operation, type Pool } from '../entities';
import type { ConcurrencyLimit } from '../events/concurrency-limit';
import { FINAL_OPERATION_STATUSES, type OperationWaiter } from '../events/operation-waiter';
import type { PoolCounts } from '../pools/pool.repository';
import { cronProblem, isTimeZone } from '../pools/schedule';
import { PoolSizeError, type PoolsService } from '../pools/pools.service';
import { admit } from './admission';
import { actorOf } from './auth';
import { idempotencyKeyHeader, json, problem, registerRoute } from './contract';
import { serve } from './routing';
import { agentName, agentSchema, agentSpecSchema, boundedString, createAgentBody, jobRefSchema, labelsSchema, linksSchema, operationSchema, requestComponents, responseComponents } from './schemas';
import { idempotencyKey, invalid, parse } from './v1.routes';
import { agentSpecView, agentView, links, operationView, viewerOf, type Viewer } from './views';
import { getOperationQuery } from './webhook.schemas';

/**
 * /v1/pools: pools of standby agents made from one spec, kept at their minReady by the pool policy
 * (src/pools/pool-policy.ts), and the claim that hands a standby over.
 */

const POOL_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
export const MAX_POOL_SIZE = 100;
const MAX_SCHEDULES = 20;
const MAX_LEASE_SECONDS = 30 * 24 * 3600;

const poolName = boundedString(POOL_NAME_MAX_LENGTH)
  .regex(POOL_NAME, 'must be a DNS label: lower-case letters, digits and inner hyphens')
  .meta({ description: 'A DNS label; standbys are named `<pool>-<8 hex digits>`.' });

const count = (what: string) => z.int(`must be an integer`).min(0, 'must be at least 0').max(MAX_POOL_SIZE, `must be at most ${MAX_POOL_SIZE}`).meta({ description: what });

const agentFields = createAgentBody.shape;
const poolSpecBody = z.strictObject({
  location: agentFields.location,
  serverType: agentFields.serverType,
  image: agentFields.image,
  sshKeys: agentFields.sshKeys,
  labels: agentFields.labels,
  userData: agentFields.userData,
  reporter: agentFields.reporter,
}).meta({
  description:
    "What each standby is made from, as for an agent (POST /v1/agents); unset fields take the deployment's defaults. " +
    "`labels` are the standbys' while they wait; a claim gives the claimed agent its own.",
});

const scheduleBody = z.strictObject({
  cron: z
    .string()
    .max(100, 'must be at most 100 characters')
    .superRefine((cron, ctx) => {
      const p = cronProblem(cron);
      if (p) ctx.addIssue({ code: 'custom', message: p });
    })
    .meta({ description: 'Five fields (minute hour day-of-month month day-of-week), read in `timezone`.', examples: ['0 8 * * 1-5'] }),
  timezone: z
    .string()
    .max(64, 'must be at most 64 characters')
    .refine(isTimeZone, 'must be an IANA time zone such as Europe/Berlin')
    .meta({ description: 'IANA time zone the expression is read in (daylight-saving changes included).', examples: ['Europe/Berlin'] }),
  minReady: count('Standbys to keep from this time on, until another schedule of the pool fires.'),
});

const schedulesBody = z.array(scheduleBody).max(MAX_SCHEDULES, `at most ${MAX_SCHEDULES} schedules`);
const maxSizeBody = z.int('must be an integer').min(1, 'must be at least 1').max(MAX_POOL_SIZE, `must be at most ${MAX_POOL_SIZE}`);

export const createPoolBody = z.strictObject({
  name: poolName,
  spec: poolSpecBody.optional(),
  minReady: count('Standbys the pool keeps ready at all times (schedules may ask for more).'),
  standby: z.enum(STANDBY_MODES, { error: () => `must be one of ${STANDBY_MODES.join(', ')}` }).meta({
    description: 'How standbys wait: `running` (claimed in seconds), `stopped` (powered on at claim), `hibernated` (woken from a snapshot at claim).',
  }),
  maxSize: maxSizeBody.nullable().optional().meta({ description: 'The most standbys at once; a schedule asking for more gets this many.' }),
  schedules: schedulesBody.optional(),
});
requestComponents.add(createPoolBody, { id: 'CreatePoolRequest' });

export const updatePoolBody = z
  .strictObject({
    spec: poolSpecBody.optional(),
    minReady: count('Standbys the pool keeps ready at all times.').optional(),
    standby: z.enum(STANDBY_MODES, { error: () => `must be one of ${STANDBY_MODES.join(', ')}` }).optional(),
    maxSize: maxSizeBody.nullable().optional(),
    schedules: schedulesBody.optional(),
  })
  .refine((b) => Object.keys(b).length > 0, 'name at least one field to change');
requestComponents.add(updatePoolBody, { id: 'UpdatePoolRequest', description: 'Only the fields given change; a new spec applies to standbys made from now on.' });

export const claimPoolBody = z.strictObject({
  name: agentName
    .meta({ description: "The claimed agent's new name (unique among agents that are not destroyed); omitted, it keeps its standby name." })
    .optional(),
  labels: labelsSchema.optional(),
  leaseSeconds: z
    .int('must be an integer')
    .min(1, 'must be at least 1')
    .max(MAX_LEASE_SECONDS, `must be at most ${MAX_LEASE_SECONDS}`)
    .meta({ description: 'How long the claimer holds the agent; recorded on the claim (its operation args).' })
    .optional(),
});
requestComponents.add(claimPoolBody, { id: 'ClaimRequest' });

const dateTime = z.iso.datetime({ offset: true });

export const poolSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  spec: agentSpecSchema.extend({ labels: z.record(z.string(), z.string()) }),
  minReady: z.int(),
  standby: z.enum(STANDBY_MODES),
  maxSize: z.int().nullable(),
  schedules: z.array(z.object({ cron: z.string(), timezone: z.string(), minReady: z.int() })),
  counts: z.object({
    ready: z.int().meta({ description: 'Standbys settled in the standby state, claimable now.' }),
    starting: z.int().meta({ description: 'Standbys on their way (provisioning, being stopped or hibernated).' }),
    claimed: z.int().meta({ description: 'Agents claimed from the pool and not destroyed.' }),
  }),
  createdAt: dateTime,
  updatedAt: dateTime,
  links: linksSchema,
});
responseComponents.add(poolSchema, { id: 'Pool' });

export const poolListSchema = z.object({ items: z.array(poolSchema) });
responseComponents.add(poolListSchema, { id: 'PoolList' });

export const poolDeletedSchema = z.object({
  pool: poolSchema,
  destroying: z.array(operationSchema).meta({ description: "The destroy operations of the pool's standbys (claimed agents are left alone)." }),
});
responseComponents.add(poolDeletedSchema, { id: 'PoolDeleted' });

export const claimAnswerSchema = z.object({
  agent: agentSchema,
  operation: operationSchema.meta({ description: 'The claim operation.' }),
  from: z.enum(['running', 'stopped', 'hibernated', 'provision']).meta({
    description: 'A standby in this state was handed over, or `provision`: none was ready and a new agent is being made.',
  }),
  preparing: operationSchema.nullable().meta({ description: 'The start, wake or provision requested with the claim; null from a running standby.' }),
  leaseSeconds: z.int().nullable(),
  job: jobRefSchema,
  links: linksSchema,
});
responseComponents.add(claimAnswerSchema, { id: 'ClaimAnswer' });

const nameParam = { name: { description: 'Pool name.', schema: { type: 'string', pattern: POOL_NAME.source, maxLength: POOL_NAME_MAX_LENGTH } } };

registerRoute({
  method: 'post',
  path: '/v1/pools',
  operationId: 'createPool',
  summary: 'Create a pool of standby agents',
  description: 'The pool policy provisions standbys until minReady (or the schedule in force) are ready; see README, Pools.',
  tag: 'pools',
  auth: 'operate',
  body: createPoolBody,
  responses: {
    '201': json('The pool.', poolSchema, { Location: { description: 'URL of the pool.', schema: { type: 'string' } } }),
    '400': problem('Invalid fields (every problem is listed in `errors`), or minReady or a schedule above maxSize.'),
    '409': problem('A pool has this name (type name-taken).'),
    '415': problem('Content-Type is not application/json.'),
    '422': problem('The cloud does not offer the server type in the location (type unavailable-server-spec).'),
  },
});

registerRoute({
  method: 'get',
  path: '/v1/pools',
  operationId: 'listPools',
  summary: 'List pools with their counts, by name',
  tag: 'pools',
  auth: 'read',
  responses: { '200': json('The pools.', poolListSchema) },
});

registerRoute({
  method: 'get',
  path: '/v1/pools/{name}',
  operationId: 'getPool',
  summary: 'A pool with its counts: ready, starting, claimed',
  tag: 'pools',
  auth: 'read',
  params: nameParam,
  responses: { '200': json('The pool.', poolSchema), '400': problem('The name is not a pool name.'), '404': problem('Unknown pool.') },
});

registerRoute({
  method: 'patch',
  path: '/v1/pools/{name}',
  operationId: 'updatePool',
  summary: 'Change what a pool keeps (minReady, standby, maxSize, schedules, spec)',
  tag: 'pools',
  auth: 'operate',
  params: nameParam,
  body: updatePoolBody,
  responses: {
    '200': json('The pool as changed.', poolSchema),
    '400': problem('Invalid fields, or minReady or a schedule above maxSize.'),
    '404': problem('Unknown pool.'),
    '415': problem('Content-Type is not application/json.'),
    '422': problem('The cloud does not offer the server type in the location.'),
  },
});

registerRoute({
  method: 'delete',
  path: '/v1/pools/{name}',
  operationId: 'deletePool',
  summary: 'Delete a pool and destroy its standbys (never its claimed agents)',
  tag: 'pools',
  auth: 'operate',
  params: nameParam,
  responses: {
    '200': json('Deleted; the standbys are being destroyed.', poolDeletedSchema),
    '400': problem('The name is not a pool name.'),
    '404': problem('Unknown pool.'),
  },
});

registerRoute({
  method: 'post',
  path: '/v1/pools/{name}/claim',
  operationId: 'claimFromPool',
  summary: 'Hand a ready standby over (or provision one when none is ready)',
  description:
    'Takes a running standby first (no create, no boot: the claim relabels its server), else a stopped one (powered on), ' +
    'else a hibernated one (woken); with none, a new agent is provisioned from the pool\'s spec. The agent is renamed and ' +
    'labelled as asked; the tailnet device keeps its hostname (the Tailscale API cannot rename a device). Two claims never ' +
    'get the same standby. `wait` answers once the claim has finished (200) or with its state when the time is up (202).',
  tag: 'pools',
  auth: 'operate',
  params: nameParam,
  query: getOperationQuery,
  headers: [idempotencyKeyHeader],
  body: claimPoolBody,
  responses: {
    '200': json('With `wait`: the claim finished (succeeded or failed) within it; or the replay of an earlier request with the same Idempotency-Key (the claim it made).', claimAnswerSchema),
    '202': json('Claim accepted; the agent is handed over when its operation succeeds.', claimAnswerSchema),
    '400': problem('Invalid name, body or `wait`.'),
    '404': problem('Unknown pool.'),
    '409': problem('Another agent has the name asked for (type name-taken), or MAX_AGENTS agents exist (type quota-exceeded).'),
    '415': problem('Content-Type is not application/json.'),
    '422': problem('Idempotency-Key already used for a different request (another route, or a claim on another pool).'),
    '429': problem('With `wait`: too many long polls open (LONG_POLL_MAX_PER_TOKEN, LONG_POLL_MAX_CONNECTIONS).'),
  },
});

export function poolView(pool: Pool, counts: PoolCounts, viewer: Viewer): z.output<typeof poolSchema> {
  const { labels, ...spec } = pool.spec;
  return {
    id: pool.id,
    name: pool.name,
    spec: { ...agentSpecView(spec, viewer), labels },
    minReady: pool.minReady,
    standby: pool.standby,
    maxSize: pool.maxSize,
    schedules: pool.schedules,
    counts,
    createdAt: pool.createdAt.toISOString(),
    updatedAt: pool.updatedAt.toISOString(),
    links: { self: `/v1/pools/${pool.name}`, claim: `/v1/pools/${pool.name}/claim` },
  };
}

function nameOf(value: unknown): string {
  const parsed = poolName.safeParse(value);
  if (!parsed.success) throw invalid([{ path: 'params.name', message: 'must be a pool name (a DNS label of at most 40 characters)' }]);
  return parsed.data;
}

function sizeProblem<T>(run: () => Promise<T>): Promise<T> {
  return run().catch((err: unknown) => {
    if (err instanceof PoolSizeError) throw invalid([{ path: 'body', message: err.message }]);
    throw err;
  });
}

export interface PoolsRouterDeps {
  pools: PoolsService;
  /** Claims with `wait` (omitted: they answer at once). */
  waiter?: Pick<OperationWaiter, 'wait'>;
  waitLimit?: ConcurrencyLimit;
  /** The claim operation as it is now. */
  readOperation: (id: string) => Promise<Operation>;
  readAgent: (id: string) => Promise<import('../entities').Agent>;
}

export function createPoolsRouter(deps: PoolsRouterDeps): Router {
  const router = express.Router({ strict: false });
  serve(router, {
    createPool: async (req, res) => {
      if (req.body === undefined) throw invalid([{ path: '(body)', message: 'a JSON object with name, minReady and standby is required' }]);
      const input = parse(createPoolBody, req.body, 'body');
      const pool = await sizeProblem(() => deps.pools.create(input));
      res.location(`/v1/pools/${pool.name}`);
      res.status(201).json(poolView(pool, { ready: 0, starting: 0, claimed: 0 }, viewerOf(res)));
    },
    listPools: async (_req, res) => {
      const viewer = viewerOf(res);
      res.json({ items: (await deps.pools.list()).map(({ pool, counts }) => poolView(pool, counts, viewer)) });
    },
    getPool: async (req, res) => {
      const { pool, counts } = await deps.pools.get(nameOf(req.params.name));
      res.json(poolView(pool, counts, viewerOf(res)));
    },
    updatePool: async (req, res) => {
      const name = nameOf(req.params.name);
      if (req.body === undefined) throw invalid([{ path: '(body)', message: 'a JSON object with the fields to change is required' }]);
      const patch = parse(updatePoolBody, req.body, 'body');
      await sizeProblem(() => deps.pools.update(name, patch));
      const { pool, counts } = await deps.pools.get(name);
      res.json(poolView(pool, counts, viewerOf(res)));
    },
    deletePool: async (req, res) => {
      const name = nameOf(req.params.name);
      const { counts } = await deps.pools.get(name);
      const { pool, destroying } = await deps.pools.delete(name, { requestedBy: actorOf(res) });
      res.json({ pool: poolView(pool, counts, viewerOf(res)), destroying: destroying.map(operationView) });
    },
    claimFromPool: async (req, res) => {
      const name = nameOf(req.params.name);
      const { wait } = parse(getOperationQuery, req.query, 'query');
      const input = parse(claimPoolBody, req.body ?? {}, 'body');
      const result = await deps.pools.claim(name, input, { requestedBy: actorOf(res), idempotency: idempotencyKey(req, res) });
      let operation = result.operation;
      let agent = result.agent;
      if (wait && deps.waiter) {
        const release = deps.waitLimit ? admit(deps.waitLimit, res, 'long polls') : () => undefined;
        const gone = new AbortController();
        res.once('close', () => gone.abort());
        try {
          operation = await deps.waiter.wait(operation.id, wait * 1000, () => deps.readOperation(operation.id), (o) => FINAL_OPERATION_STATUSES.has(o.status), gone.signal);
        } finally {
          release();
        }
        agent = await deps.readAgent(agent.id);
      }
      const final = FINAL_OPERATION_STATUSES.has(operation.status);
      if (!final) res.location(links.operation(operation.id));
      res.status((final && wait) || !result.created ? 200 : 202).json({
        agent: agentView(agent, viewerOf(res)),
        operation: operationView(operation),
        from: result.from,
        preparing: result.preparing ? operationView(result.preparing) : null,
        leaseSeconds: (operation.args as { leaseSeconds?: number | null }).leaseSeconds ?? null,
        job: { queue: 'claim' as const, id: operation.queueJobId },
        links: { self: links.operation(operation.id), agent: links.agent(agent.id), pool: `/v1/pools/${name}` },
      });
    },
  });
  return router;
}
