import express, { type Router } from 'express';
import { z } from 'zod';
import { findingFacts, type OwnershipFindingRepository } from '../db/ownership-finding.repository';
import { OWNED_RESOURCE_TYPES, type OwnershipFinding } from '../entities';
import { idPage } from '../lib/cursor';
import { actorOf } from './auth';
import { json, problem, registerRoute } from './contract';
import { csvOf, cursorParam, intParam, requestComponents, responseComponents } from './schemas';
import { serve } from './routing';
import { parse, uuidParam } from './v1.routes';

/**
 * /v1/findings: destructive cloud calls the ownership guard refused (src/fleet/ownership-guard.ts),
 * open until the reconciler sees the resource gone or recorded, or an admin resolves one.
 */

export const FINDING_NOTE_MAX_LENGTH = 2000;

export const listFindingsQuery = z.strictObject({
  limit: intParam(1, 100).meta({ default: 20 }).optional(),
  cursor: cursorParam.optional(),
  status: z.enum(['open', 'resolved'], { error: () => 'must be open or resolved' }).meta({ description: 'Omitted: both.' }).optional(),
  kind: csvOf(OWNED_RESOURCE_TYPES)
    .meta({
      description: `Only findings about these resources (comma-separated: ${OWNED_RESOURCE_TYPES.join(', ')}).`,
      examples: ['server,device'],
    })
    .optional(),
});

export const resolveFindingBody = z.strictObject({
  note: z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(FINDING_NOTE_MAX_LENGTH, `must be at most ${FINDING_NOTE_MAX_LENGTH} characters`)
    .meta({ description: 'What was done about it (kept as the resolution, and the reason of its event).' }),
});
requestComponents.add(resolveFindingBody, { id: 'ResolveFinding' });

const dateTime = z.iso.datetime({ offset: true });

export const findingSchema = z.object({
  id: z.uuid(),
  status: z.enum(['open', 'resolved']),
  resourceType: z.enum(OWNED_RESOURCE_TYPES),
  resourceId: z.string(),
  resourceName: z.string().nullable(),
  action: z.string().meta({ description: 'What was refused: delete, power_off, revoke, accept.' }),
  operation: z.string().meta({ description: 'The workflow that asked: destroy, rollback, provision, stop, reconcile, …' }),
  operationId: z.uuid().nullable(),
  agentId: z.uuid().nullable(),
  instanceId: z.uuid().nullable(),
  matched: z.array(z.string()),
  missing: z.array(z.string()),
  createdAt: dateTime,
  resolvedAt: dateTime.nullable(),
  resolvedBy: z.string().nullable().meta({ description: '`system` (the reconciler) or the token that resolved it.' }),
  resolution: z.string().nullable(),
});
responseComponents.add(findingSchema, { id: 'Finding' });

export const findingPageSchema = z.object({
  items: z.array(findingSchema),
  limit: z.int(),
  nextCursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last.' }),
});
responseComponents.add(findingPageSchema, { id: 'FindingPage' });

export function findingView(f: OwnershipFinding) {
  return {
    id: f.id,
    status: f.resolvedAt ? ('resolved' as const) : ('open' as const),
    ...findingFacts(f),
    createdAt: f.createdAt,
    resolvedAt: f.resolvedAt,
    resolvedBy: f.resolvedBy,
    resolution: f.resolution,
  };
}

registerRoute({
  method: 'get',
  path: '/v1/findings',
  operationId: 'listFindings',
  summary: 'Ownership findings (destructive calls refused for lack of proof), newest first',
  description:
    'Keyset pagination on (createdAt, id): pass `nextCursor` from the previous page as `cursor`. A finding is ' +
    'open until a reconcile pass sees the resource gone or recorded by a live instance, or an admin resolves it.',
  tag: 'system',
  auth: 'read',
  query: listFindingsQuery,
  responses: {
    '200': json('One page of findings.', findingPageSchema),
    '400': problem('Invalid query parameters.'),
  },
});

registerRoute({
  method: 'post',
  path: '/v1/findings/{id}/resolve',
  operationId: 'resolveFinding',
  summary: 'Resolve an open finding with a note',
  description:
    'Writes an event on the finding (`open` → `resolved`, entity type `finding`, on the agent\'s timeline when the ' +
    'agent is known) and sends the `finding.resolved` webhook. Nothing in the clouds is touched.',
  tag: 'system',
  auth: 'admin',
  params: { id: 'Finding id.' },
  body: resolveFindingBody,
  responses: {
    '200': json('The resolved finding.', findingSchema),
    '400': problem('The id is not a UUID, or the note is missing or too long.'),
    '404': problem('Unknown finding.'),
    '409': problem('The finding was resolved already.'),
    '415': problem('Content-Type is not application/json.'),
  },
});

export function createFindingsRouter(deps: { findings: Pick<OwnershipFindingRepository, 'list' | 'resolve'> }): Router {
  const router = express.Router({ strict: false });
  serve(router, {
    listFindings: async (req, res) => {
      const q = parse(listFindingsQuery, req.query, 'query');
      res.json(await idPage(q, (page) => deps.findings.list({ ...page, status: q.status, kind: q.kind }), findingView));
    },
    resolveFinding: async (req, res) => {
      const id = uuidParam(req);
      const input = parse(resolveFindingBody, req.body ?? {}, 'body');
      const row = await deps.findings.resolve(id, input.note, { actor: actorOf(res) });
      res.json(findingView(row));
    },
  });
  return router;
}
