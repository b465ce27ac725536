import express, { type Router } from 'express';
import { z } from 'zod';
import { TokenNameTakenError, type ApiTokenRepository } from '../db/api-token.repository';
import { TOKEN_NAME_MAX_LENGTH, TOKEN_SCOPES } from '../entities';
import { BOOTSTRAP_TOKEN_NAME, generateToken } from './auth';
import { HttpProblem } from './problem';
import { needs, parse, route, uuidParam } from './v1.routes';
import { tokenView } from './views';

const TOKEN_NAME = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${TOKEN_NAME_MAX_LENGTH - 1}}$`);

const createTokenBody = z.strictObject({
  name: z
    .string()
    .regex(TOKEN_NAME, `must be 1–${TOKEN_NAME_MAX_LENGTH} letters, digits, ".", "_" or "-", starting with a letter or digit`)
    // The bootstrap principal's name stays unambiguous in the audit trail.
    .refine((n) => n.toLowerCase() !== BOOTSTRAP_TOKEN_NAME, { message: `"${BOOTSTRAP_TOKEN_NAME}" is reserved for API_TOKEN` }),
  scope: z.enum(TOKEN_SCOPES, { error: () => `must be one of ${TOKEN_SCOPES.join(', ')}` }),
  expiresAt: z.iso
    .datetime({ offset: true, error: () => 'must be an ISO 8601 date-time such as 2030-01-31T12:00:00Z' })
    .transform((s) => new Date(s))
    .refine((d) => d.getTime() > Date.now(), { message: 'must be in the future' })
    .nullable()
    .optional(),
});

const listTokensQuery = z.strictObject({
  includeRevoked: z.enum(['true', 'false'], { error: () => 'must be true or false' }).optional(),
});

/** /v1/tokens: named API tokens (admin scope). A token's secret is shown once, in the 201. */
export function createTokensRouter(deps: { tokens: Pick<ApiTokenRepository, 'create' | 'list' | 'revoke'> }): Router {
  const router = express.Router({ strict: false });
  route(router, '/tokens', {
    post: needs('admin', async (req, res) => {
      const input = parse(createTokenBody, req.body ?? {}, 'body');
      const secret = generateToken();
      let row;
      try {
        row = await deps.tokens.create({
          name: input.name,
          scope: input.scope,
          expiresAt: input.expiresAt ?? null,
          tokenHash: secret.tokenHash,
          tokenPrefix: secret.tokenPrefix,
        });
      } catch (err) {
        if (err instanceof TokenNameTakenError) throw new HttpProblem('name-taken', err.message);
        throw err;
      }
      res.setHeader('Cache-Control', 'no-store');
      res.status(201).json({ ...tokenView(row), token: secret.token });
    }),
    get: needs('admin', async (req, res) => {
      const q = parse(listTokensQuery, req.query, 'query');
      const rows = await deps.tokens.list({ includeRevoked: q.includeRevoked === 'true' });
      res.json({ items: rows.map(tokenView) });
    }),
  });
  route(router, '/tokens/:id', {
    delete: needs('admin', async (req, res) => {
      const id = uuidParam(req);
      if (!(await deps.tokens.revoke(id))) throw new HttpProblem('not-found', `Token ${id} not found`);
      res.status(204).end();
    }),
  });
  return router;
}
