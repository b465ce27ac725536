import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { HttpProblem } from './problem';

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

// Hashing first makes the comparison constant-time in the length of the secret as well.
function sameSecret(given: string, expectedDigest: Buffer): boolean {
  return timingSafeEqual(digest(given), expectedDigest);
}

/** `Authorization: Bearer <API_TOKEN>` for the /v1 API. */
export function bearerAuth(apiToken: string): RequestHandler {
  // Hashed once, not on every request.
  const expected = digest(apiToken);
  return (req: Request, _res: Response, next: NextFunction) => {
    const header = req.get('authorization') ?? '';
    const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
    if (!match) {
      next(
        new HttpProblem('unauthorized', 'Send the API token as "Authorization: Bearer <token>".', {
          headers: { 'WWW-Authenticate': 'Bearer realm="tailfleet"' },
        }),
      );
      return;
    }
    if (!sameSecret(match[1]!, expected)) {
      next(
        new HttpProblem('unauthorized', 'The bearer token is not valid.', {
          headers: { 'WWW-Authenticate': 'Bearer realm="tailfleet", error="invalid_token"' },
        }),
      );
      return;
    }
    next();
  };
}

/** HTTP Basic for Bull Board, so a browser shows its login prompt. */
export function basicAuth(user: string, password: string): RequestHandler {
  const expectedUser = digest(user);
  const expectedPassword = digest(password);
  return (req: Request, _res: Response, next: NextFunction) => {
    const header = req.get('authorization') ?? '';
    const match = /^Basic[ ]+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    const decoded = match ? Buffer.from(match[1]!, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    // Both comparisons always run, so the timing does not tell which half was wrong.
    const userOk = sameSecret(colon >= 0 ? decoded.slice(0, colon) : '', expectedUser);
    const passwordOk = sameSecret(colon >= 0 ? decoded.slice(colon + 1) : '', expectedPassword);
    if (match && colon >= 0 && userOk && passwordOk) {
      next();
      return;
    }
    next(
      new HttpProblem('unauthorized', 'Bull Board needs the board user name and password.', {
        headers: { 'WWW-Authenticate': 'Basic realm="tailfleet", charset="UTF-8"' },
      }),
    );
  };
}
