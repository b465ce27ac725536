import express, { type Router } from 'express';
import { TokenNameTakenError, type ApiTokenRepository } from '../db/api-token.repository';
import { generateToken, isReservedTokenName } from './auth';
import { HttpProblem } from './problem';
import { createTokenBody, listTokensQuery } from './schemas';
import { parse, uuidParam } from './v1.routes';
import { serve } from './routing';
import { tokenView } from './views';

/** /v1/tokens: named API tokens (admin scope). A token's secret is shown once, in the 201. */
export function createTokensRouter(deps: { tokens: Pick<ApiTokenRepository, 'create' | 'list' | 'revoke'> }): Router {
  const router = express.Router({ strict: false });
  serve(router, {
    createToken: async (req, res) => {
      const input = parse(createTokenBody, req.body ?? {}, 'body');
      if (isReservedTokenName(input.name)) {
        throw new HttpProblem('name-reserved', `"${input.name}" is a name tailfleet records its own actions under; choose another.`, {
          errors: [{ path: 'body.name', message: 'is reserved' }],
        });
      }
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
    },
    listTokens: async (req, res) => {
      const q = parse(listTokensQuery, req.query, 'query');
      const rows = await deps.tokens.list({ includeRevoked: q.includeRevoked === 'true' });
      res.json({ items: rows.map(tokenView) });
    },
  });
  serve(router, {
    revokeToken: async (req, res) => {
      const id = uuidParam(req);
      if (!(await deps.tokens.revoke(id))) throw new HttpProblem('not-found', `Token ${id} not found`);
      res.status(204).end();
    },
  });
  return router;
}
