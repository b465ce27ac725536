import type { NextFunction, Request, Response } from 'express';
import type { FieldProblem } from './problem';
import { HttpProblem } from './problem';

/**
 * What every query and JSON body under /v1 must be before a route reads it, checked once here so no
 * route (and no schema) has to remember: text PostgreSQL can store and UTF-8 can carry, object keys
 * that cannot reach an object's prototype, and nesting a reader can walk without thinking about it.
 */

/** Deeper than any request of this API needs (a create body is three levels deep). */
export const MAX_JSON_DEPTH = 32;

// Keys that, copied onto a plain object, reach its prototype (or look like they do to the next reader).
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
// A high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// Enough to tell a client what is wrong without echoing a whole hostile body back.
const MAX_PROBLEMS = 10;

/**
 * Why a string cannot be taken as text, or null. PostgreSQL refuses NUL in text (an opaque error
 * deep in a query otherwise), and an unpaired surrogate is not Unicode: UTF-8 cannot encode it, so
 * it would be stored as something other than what was sent.
 */
export function textProblem(value: string): string | null {
  if (value.includes('\u0000')) return 'must not contain NUL characters';
  if (LONE_SURROGATE.test(value)) return 'must be valid Unicode (an unpaired surrogate is not)';
  return null;
}

/** Every problem with a parsed query or JSON value (at most MAX_PROBLEMS), each named by its path under `root`. */
export function inputProblems(value: unknown, root: string): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const visit = (v: unknown, path: string, depth: number): void => {
    if (problems.length >= MAX_PROBLEMS) return;
    if (typeof v === 'string') {
      const problem = textProblem(v);
      if (problem) problems.push({ path, message: problem });
      return;
    }
    if (v === null || typeof v !== 'object') return;
    if (depth >= MAX_JSON_DEPTH) {
      problems.push({ path, message: `nests deeper than ${MAX_JSON_DEPTH} levels` });
      return;
    }
    if (Array.isArray(v)) {
      v.forEach((item, i) => visit(item, `${path}.${i}`, depth + 1));
      return;
    }
    for (const key of Object.keys(v)) {
      const keyPath = `${path}.${textProblem(key) ? JSON.stringify(key) : key}`;
      if (FORBIDDEN_KEYS.has(key)) problems.push({ path: keyPath, message: `the key "${key}" is not allowed` });
      else if (textProblem(key)) problems.push({ path: keyPath, message: `the key ${textProblem(key)}` });
      else visit((v as Record<string, unknown>)[key], keyPath, depth + 1);
      if (problems.length >= MAX_PROBLEMS) return;
    }
  };
  visit(value, root, 0);
  return problems;
}

/** Middleware (after the JSON body parser): a 400 naming every bad string, key or nesting in the query or body. */
export function guardRequestInput(req: Request, _res: Response, next: NextFunction): void {
  // Most requests (commands, reads by id) carry neither: nothing to walk. Express parses the query
  // string on every read of req.query, so it is read once, and only when there is one.
  const query: unknown = req.url.includes('?') ? req.query : undefined;
  if (query === undefined && req.body === undefined) {
    next();
    return;
  }
  const problems = inputProblems(query, 'query');
  if (problems.length < MAX_PROBLEMS) problems.push(...inputProblems(req.body, 'body'));
  next(problems.length > 0 ? new HttpProblem('validation-error', 'The request has invalid fields.', { errors: problems.slice(0, MAX_PROBLEMS) }) : undefined);
}
