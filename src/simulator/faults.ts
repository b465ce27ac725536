import { z } from 'zod';
import type { Random } from './random';
import { parseOrThrow } from './timings';

export interface SimFaultRule {
  /** HTTP method, any case; omitted = every method. */
  method?: string;
  /**
   * A route template (`/hetzner/v1/servers/{id}`) matches exactly that route; any other string is a
   * prefix of the template or the path (`/tailscale`, `/hetzner/v1/servers/42`). Omitted = every route.
   */
  route?: string;
  /** Only requests made with a token of this Hetzner project (by name); omitted = every request. */
  project?: string;
  /** Probability that a matching request fails; defaults to 1 when status, code, hang or drop is given. */
  errorRate?: number;
  /** Status of the injected error (default 503). */
  status?: number;
  /** Error code in the API's error body (default derived from status, e.g. 503 → `unavailable`). */
  code?: string;
  message?: string;
  /** Extra delay before every matching request is handled (not subject to errorRate). */
  latencyMs?: number;
  /** Apply to the next N matching requests only, then the rule is removed. */
  times?: number;
  /** Never answer (until the client gives up or the simulator closes). */
  hang?: boolean;
  /** Destroy the connection without an answer (a network error for the client). */
  drop?: boolean;
  /**
   * The request is carried out first and the fault (status, hang or drop) replaces its answer: the
   * write happened, but the client cannot know (a timeout or a gateway error after the commit).
   */
  afterCommit?: boolean;
}

export interface SimFaults {
  rules: SimFaultRule[];
  /** Added to every API request. */
  latencyMs?: number;
}

export interface FaultOutcome {
  latencyMs: number;
  error?: { status: number; code?: string; message?: string; hang: boolean; drop: boolean; afterCommit: boolean };
}

const ruleSchema = z
  .object({
    method: z.string().min(1).optional(),
    route: z.string().min(1).optional(),
    project: z.string().min(1).optional(),
    errorRate: z.number().min(0).max(1).optional(),
    status: z.number().int().min(400).max(599).optional(),
    code: z.string().min(1).optional(),
    message: z.string().optional(),
    latencyMs: z.number().finite().min(0).optional(),
    times: z.number().int().min(1).optional(),
    hang: z.boolean().optional(),
    drop: z.boolean().optional(),
    afterCommit: z.boolean().optional(),
  })
  .strict()
  .refine((r) => !r.afterCommit || r.status !== undefined || r.code !== undefined || r.hang || r.drop, {
    message: 'afterCommit needs status, code, hang or drop: the fault that replaces the answer',
  });
const faultsSchema = z.union([
  z.array(ruleSchema),
  z.object({ rules: z.array(ruleSchema).optional(), latencyMs: z.number().finite().min(0).optional() }).strict(),
]);

interface ActiveRule extends SimFaultRule {
  methodUpper?: string;
  remaining: number;
  injectsError: boolean;
}

export class FaultInjector {
  private rules: ActiveRule[] = [];
  private latencyMs = 0;

  constructor(
    private readonly random: Random,
    private readonly knownTemplates: ReadonlySet<string>,
  ) {}

  /** Replaces all rules; accepts `{rules, latencyMs}` or a bare array of rules. */
  set(input: unknown): void {
    const parsed = parseOrThrow(faultsSchema, input, 'faults');
    const { rules = [], latencyMs = 0 } = Array.isArray(parsed) ? { rules: parsed } : parsed;
    this.latencyMs = latencyMs;
    this.rules = rules.map((r) => ({
      ...r,
      methodUpper: r.method?.toUpperCase(),
      remaining: r.times ?? Infinity,
      injectsError:
        r.errorRate !== undefined || r.status !== undefined || r.code !== undefined || !!r.hang || !!r.drop,
    }));
  }

  clear(): void {
    this.rules = [];
    this.latencyMs = 0;
  }

  get(): SimFaults {
    return {
      latencyMs: this.latencyMs,
      rules: this.rules.map(({ methodUpper: _m, remaining, injectsError: _i, ...r }) => ({
        ...r,
        ...(Number.isFinite(remaining) ? { times: remaining } : {}),
      })),
    };
  }

  /** Decides what happens to one request; consumes `times` of the rules that fired. */
  decide(method: string, template: string | undefined, path: string, project?: string): FaultOutcome {
    const out: FaultOutcome = { latencyMs: this.latencyMs };
    if (this.rules.length === 0) return out;
    let spent = false;
    for (const rule of this.rules) {
      if (rule.methodUpper && rule.methodUpper !== method) continue;
      if (rule.route && !this.matchesRoute(rule.route, template, path)) continue;
      if (rule.project !== undefined && rule.project !== project) continue;
      let fired = false;
      if (rule.latencyMs) {
        out.latencyMs += rule.latencyMs;
        fired = true;
      }
      if (rule.injectsError && !out.error && this.random.next() < (rule.errorRate ?? 1)) {
        out.error = {
          status: rule.status ?? 503,
          code: rule.code,
          message: rule.message,
          hang: !!rule.hang,
          drop: !!rule.drop,
          afterCommit: !!rule.afterCommit,
        };
        fired = true;
      }
      if (fired && --rule.remaining <= 0) spent = true;
    }
    if (spent) this.rules = this.rules.filter((r) => r.remaining > 0);
    return out;
  }

  private matchesRoute(route: string, template: string | undefined, path: string): boolean {
    if (template === route) return true;
    if (this.knownTemplates.has(route)) return false;
    return (template !== undefined && template.startsWith(route)) || path.startsWith(route);
  }
}
