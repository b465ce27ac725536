import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import { z } from 'zod';
import type { AgentStatus } from '../entities';
import { AGENT_COMMAND_TYPES } from '../operations/types';
import type { CostService } from '../cost/cost.service';
import type { OperationReads } from '../operations/read-models';
import type { IdempotencyKey, OperationsService, RequestOptions } from '../operations/requests';
import { actorOf, agentMayReport, principalOf } from './auth';
import type { PolicyRequests } from '../policy/requests';
import { isReady } from '../policy/ready';
import { waitUntilReady } from '../policy/wait-ready';
import { HttpProblem, type FieldProblem, zodProblems } from './problem';
import { commandOperationId } from './contract';
import { guardRequestInput } from './request-guard';
import { inOrder, serve } from './routing';
import type { ConcurrencyLimit } from '../events/concurrency-limit';
import { FINAL_OPERATION_STATUSES, type OperationWaiter } from '../events/operation-waiter';
import { admit } from './admission';
import { getOperationQuery } from './webhook.schemas';
import {
  bootstrapBody,
  createAgentBody,
  createLeaseBody,
  extendBody,
  getAgentQuery,
  heartbeatBody,
  listAgentsQuery,
  listEventsQuery,
  READY_WAIT_MAX_SECONDS,
  renewLeaseBody,
  UUID,
} from './schemas';
import {
  agentView,
  commandView,
  eventView,
  instanceView,
  leaseView,
  links,
  operationView,
  provisionView,
  queueJobView,
  viewerOf,
} from './views';

// Room for 32 KiB of user data, JSON-escaped.
export const JSON_BODY_LIMIT = '64kb';

const IDEMPOTENCY_KEY = /^[\x21-\x7E]{1,200}$/;
const JSON_TYPES = ['application/json', 'application/*+json'];

export function parse<T extends z.ZodType>(schema: T, value: unknown, root: string): z.output<T> {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new HttpProblem('validation-error', 'The request has invalid fields.', { errors: zodProblems(result.error, root) });
  }
  return result.data;
}

export function invalid(errors: FieldProblem[]): HttpProblem {
  return new HttpProblem('validation-error', 'The request has invalid fields.', { errors });
}

export function uuidParam(req: Request, name = 'id'): string {
  const value = req.params[name];
  if (typeof value !== 'string' || !UUID.test(value)) {
    throw invalid([{ path: `params.${name}`, message: 'must be a UUID' }]);
  }
  return value.toLowerCase();
}

/** The request's Idempotency-Key, scoped to the token that sent it and the route it was sent to. */
export function idempotencyKey(req: Request, res: Response): IdempotencyKey | undefined {
  const value = req.get('idempotency-key');
  if (value === undefined) return undefined;
  if (!IDEMPOTENCY_KEY.test(value)) {
    throw invalid([{ path: 'headers.idempotency-key', message: 'must be 1–200 visible ASCII characters' }]);
  }
  const principal = principalOf(res);
  if (!principal) throw new Error('an Idempotency-Key is read only behind bearerAuth');
  return { key: value, owner: principal.tokenId ?? principal.name, route: `${req.method} ${String(res.locals.routeTemplate)}` };
}

/** A body, when there is one, must be JSON: anything else is refused before it is read. */
function requireJsonBody(req: Request, _res: Response, next: NextFunction): void {
  // Clients (fetch, curl -X POST) send `Content-Length: 0` for a body-less POST: that is no body.
  const empty = req.get('content-length') === '0' && req.get('transfer-encoding') === undefined;
  if (!empty && req.is(JSON_TYPES) === false) {
    next(new HttpProblem('unsupported-media-type', 'Send the request body as application/json.'));
    return;
  }
  next();
}

/** Everything below /v1 that needs the bearer token (mounted after the auth middleware); the body rules first, as one layer. */
export function v1Router(
  operations: OperationsService,
  reads: OperationReads,
  extra: Router[] = [],
  opts: { policy: PolicyRequests; waiter?: Pick<OperationWaiter, 'wait'>; waitLimit?: ConcurrencyLimit; cost?: Pick<CostService, 'instanceCosts'> },
): Router {
  const { policy } = opts;
  // Each agent shows its current monthly cost when the process can read prices.
  const costsOf = async (instances: Parameters<CostService['instanceCosts']>[0]) =>
    opts.cost ? (await opts.cost.instanceCosts(instances)).map((cost) => ({ cost })) : instances.map(() => ({}));
  const router = express.Router({ strict: false });
  router.use(inOrder(requireJsonBody, express.json({ limit: JSON_BODY_LIMIT, type: JSON_TYPES, strict: true }), guardRequestInput));

  // What a report answers: whether the agent is ready now, and its last activity.
  const activityAnswer = async (id: string) => {
    const detail = await reads.getAgent(id);
    return { agentId: id, ready: isReady(detail.agent, detail.instance), lastActivity: detail.lastActivity };
  };

  const command =
    (run: (id: string, opts: RequestOptions) => ReturnType<OperationsService['requestCommand']>): RequestHandler =>
    async (req, res) => {
      const id = uuidParam(req);
      const { operation, created } = await run(id, { idempotency: idempotencyKey(req, res), requestedBy: actorOf(res) });
      res.status(created ? 202 : 200).json(commandView(operation));
    };

  serve(router, {
    createAgent: async (req, res) => {
      const key = idempotencyKey(req, res);
      if (req.body === undefined) {
        throw invalid([{ path: '(body)', message: 'a JSON object with at least "name" is required' }]);
      }
      const input = parse(createAgentBody, req.body, 'body');
      const result = await operations.createAgent(input, { idempotency: key, requestedBy: actorOf(res) });
      if (result.created) res.location(links.agent(result.agent.id));
      res.status(result.created ? 201 : 200).json(provisionView(result, viewerOf(res)));
    },
    listAgents: async (req, res) => {
      const q = parse(listAgentsQuery, req.query, 'query');
      const limit = q.limit ?? 20;
      const page = await reads.listAgents({
        limit,
        cursor: q.cursor,
        offset: q.offset,
        status: q.status as AgentStatus[] | undefined,
        name: q.name,
        labels: q.label,
      });
      const costs = await costsOf(page.items.map((i) => i.instance));
      const viewer = viewerOf(res);
      res.json({
        items: page.items.map(({ agent, instance, lastActivity }, i) => ({
          ...agentView(agent, viewer, { instance, lastActivity }),
          ...costs[i],
          instance: instance ? instanceView(instance) : null,
        })),
        limit,
        ...(q.offset !== undefined ? { offset: q.offset } : {}),
        nextCursor: page.nextCursor,
      });
    },
    reprovisionAgent: async (req, res) => {
      const id = uuidParam(req);
      const result = await operations.requestReprovision(id, { idempotency: idempotencyKey(req, res), requestedBy: actorOf(res) });
      res.status(result.created ? 202 : 200).json(provisionView(result, viewerOf(res)));
    },
    cancelOperation: async (req, res) => {
      const operation = await operations.cancelOperation(uuidParam(req), { requestedBy: actorOf(res) });
      res.status(200).json(commandView(operation));
    },
    getAgent: async (req, res) => {
      const id = uuidParam(req);
      const q = parse(getAgentQuery, req.query, 'query');
      let detail: Awaited<ReturnType<OperationReads['getAgent']>>;
      if (q.wait === 'ready') {
        const release = opts.waitLimit ? admit(opts.waitLimit, res, 'long polls') : () => undefined;
        const gone = new AbortController();
        res.once('close', () => gone.abort());
        try {
          detail = await waitUntilReady(() => reads.getAgent(id), { timeoutMs: (q.timeout ?? READY_WAIT_MAX_SECONDS) * 1000, signal: gone.signal });
        } finally {
          release();
        }
      } else {
        detail = await reads.getAgent(id);
      }
      const [cost] = await costsOf([detail.instance]);
      res.json({
        agent: { ...agentView(detail.agent, viewerOf(res), detail), ...cost },
        instance: detail.instance ? instanceView(detail.instance) : null,
        operation: detail.operation ? operationView(detail.operation) : null,
        links: {
          self: links.agent(detail.agent.id),
          events: links.events(detail.agent.id),
          ...(detail.operation ? { operation: links.operation(detail.operation.id) } : {}),
        },
      });
    },
    agentHeartbeat: async (req, res) => {
      const id = uuidParam(req);
      agentMayReport(res, id);
      const body = parse(heartbeatBody, req.body ?? {}, 'body');
      await policy.heartbeat(id, { busy: body.busy ?? null, sessions: body.sessions, load: body.load ?? null });
      res.json(await activityAnswer(id));
    },
    agentBootstrap: async (req, res) => {
      const id = uuidParam(req);
      agentMayReport(res, id);
      const body = parse(bootstrapBody, req.body ?? {}, 'body');
      await policy.bootstrap(id, body.status, body.detail ?? null);
      res.json(await activityAnswer(id));
    },
    createLease: async (req, res) => {
      const id = uuidParam(req);
      agentMayReport(res, id);
      const body = parse(createLeaseBody, req.body ?? {}, 'body');
      const lease = await policy.createLease(id, { ...body, createdBy: actorOf(res) });
      res.location(`${links.agent(id)}/leases/${lease.id}`);
      res.status(201).json(leaseView(lease));
    },
    listLeases: async (req, res) => {
      const id = uuidParam(req);
      res.json({ items: (await policy.listLeases(id)).map((l) => leaseView(l)) });
    },
    renewLease: async (req, res) => {
      const id = uuidParam(req);
      const leaseId = uuidParam(req, 'leaseId');
      agentMayReport(res, id);
      const body = parse(renewLeaseBody, req.body ?? {}, 'body');
      res.json(leaseView(await policy.renewLease(id, leaseId, body.ttlSeconds)));
    },
    releaseLease: async (req, res) => {
      const id = uuidParam(req);
      const leaseId = uuidParam(req, 'leaseId');
      agentMayReport(res, id);
      res.json(leaseView(await policy.releaseLease(id, leaseId)));
    },
    extendAgent: async (req, res) => {
      const id = uuidParam(req);
      const body = parse(extendBody, req.body ?? {}, 'body');
      await policy.extend(id, body, actorOf(res));
      const detail = await reads.getAgent(id);
      res.json(agentView(detail.agent, viewerOf(res), detail));
    },
    listAgentEvents: async (req, res) => {
      const id = uuidParam(req);
      const q = parse(listEventsQuery, req.query, 'query');
      const page = await reads.listEvents(id, { limit: q.limit ?? 100, cursor: q.cursor });
      res.json({ items: page.items.map(eventView), nextCursor: page.nextCursor });
    },
    // One route per command an operation descriptor declares (src/operations/types).
    ...Object.fromEntries(
      AGENT_COMMAND_TYPES.map((type) => [commandOperationId(type), command((id, opts) => operations.requestCommand(type, id, opts))]),
    ),
    rollbackProvisioningJob: command((id, opts) => operations.requestRollback(id, { ...opts, trigger: 'api' })),
    getOperation: async (req, res) => {
      const id = uuidParam(req);
      const { wait } = parse(getOperationQuery, req.query, 'query');
      let read: Awaited<ReturnType<OperationReads['getOperation']>>;
      if (wait && opts.waiter) {
        const release = opts.waitLimit ? admit(opts.waitLimit, res, 'long polls') : () => undefined;
        // The client going away ends the wait; the answer then goes nowhere.
        const gone = new AbortController();
        res.once('close', () => gone.abort());
        try {
          read = await opts.waiter.wait(
            id,
            wait * 1000,
            () => reads.getOperation(id),
            (r) => FINAL_OPERATION_STATUSES.has(r.operation.status),
            gone.signal,
          );
        } finally {
          release();
        }
      } else {
        read = await reads.getOperation(id);
      }
      const { operation, job } = read;
      res.json({
        operation: operationView(operation),
        job: queueJobView(job),
        links: {
          self: links.operation(operation.id),
          ...(operation.agentId ? { agent: links.agent(operation.agentId) } : {}),
        },
      });
    },
  });

  // Optional feature routers (e.g. /reconcile) share the token check and the body rules above. They
  // come after the agent routes, which carry most of the traffic and so are matched first.
  for (const r of extra) router.use(r);
  return router;
}
