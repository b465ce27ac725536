import { z } from 'zod';

export const ACTION_COMMANDS = [
  'create_server',
  'start_server',
  'stop_server',
  'shutdown_server',
  'reboot_server',
  'reset_server',
  'delete_server',
  'create_image',
] as const;
export type ActionCommand = (typeof ACTION_COMMANDS)[number];

export interface SimRateLimit {
  /** Bucket size, sent as `RateLimit-Limit`. */
  limit: number;
  /** Tokens added back per second (Hetzner: 1/s for a 3600/h limit). */
  refillPerSecond: number;
}

export interface SimTimings {
  /** How long each Hetzner action stays `running` (create_image: plus imageMsPerGb per GB of disk). */
  actionDurationMs: Record<ActionCommand, number>;
  /** What each GB of the server's disk adds to a create_image action. */
  imageMsPerGb: number;
  /** From `running` until cloud-init runs `tailscale up` (first boot only). */
  bootMs: number;
  /** From `tailscale up` until the device shows in the tailnet. */
  enrollDelayMs: number;
  /** From the (succeeded) shutdown action until an ACPI-honouring server is `off`. */
  shutdownMs: number;
  /** Share (0..1) of NEW servers that ignore ACPI shutdown. */
  ignoreAcpiRate: number;
  /** Lifetime of Tailscale OAuth access tokens. */
  tokenTtlSeconds: number;
  /** Hetzner token bucket, per bearer token. */
  rateLimit: SimRateLimit;
}

/** What callers may pass: every field optional, `actionDurationMs` as one number for all actions. */
export interface SimTimingsInput {
  actionDurationMs?: number | Partial<Record<ActionCommand, number>>;
  imageMsPerGb?: number;
  bootMs?: number;
  enrollDelayMs?: number;
  shutdownMs?: number;
  ignoreAcpiRate?: number;
  tokenTtlSeconds?: number;
  rateLimit?: Partial<SimRateLimit>;
}

// Demo-scale defaults: slow enough to watch in Bull Board, fast enough not to bore.
export const DEFAULT_TIMINGS: SimTimings = {
  actionDurationMs: {
    create_server: 3000,
    start_server: 1500,
    stop_server: 1000,
    shutdown_server: 500,
    reboot_server: 1500,
    reset_server: 1000,
    delete_server: 1500,
    create_image: 1000,
  },
  imageMsPerGb: 50,
  bootMs: 1000,
  enrollDelayMs: 2000,
  shutdownMs: 3000,
  ignoreAcpiRate: 0,
  tokenTtlSeconds: 3600,
  rateLimit: { limit: 3600, refillPerSecond: 1 },
};

const ms = z.number().finite().min(0);
const timingsInputSchema = z
  .object({
    actionDurationMs: z.union([ms, z.partialRecord(z.enum(ACTION_COMMANDS), ms)]).optional(),
    imageMsPerGb: ms.optional(),
    bootMs: ms.optional(),
    enrollDelayMs: ms.optional(),
    shutdownMs: ms.optional(),
    ignoreAcpiRate: z.number().min(0).max(1).optional(),
    tokenTtlSeconds: z.number().finite().positive().optional(),
    rateLimit: z
      .object({ limit: z.number().int().min(1).optional(), refillPerSecond: z.number().finite().min(0).optional() })
      .strict()
      .optional(),
  })
  .strict();

export class SimInputError extends Error {}

function parseOrThrow<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new SimInputError(`invalid ${what}: ${problems.join('; ')}`);
  }
  return parsed.data;
}

export function cloneTimings(t: SimTimings): SimTimings {
  return { ...t, actionDurationMs: { ...t.actionDurationMs }, rateLimit: { ...t.rateLimit } };
}

/** Applies `input` on top of `base`; throws SimInputError listing every invalid field. */
export function mergeTimings(base: SimTimings, input: unknown): SimTimings {
  const next = cloneTimings(base);
  if (input === undefined || input === null) return next;
  const t = parseOrThrow(timingsInputSchema, input, 'timings');
  if (typeof t.actionDurationMs === 'number') {
    for (const c of ACTION_COMMANDS) next.actionDurationMs[c] = t.actionDurationMs;
  } else if (t.actionDurationMs) {
    Object.assign(next.actionDurationMs, t.actionDurationMs);
  }
  for (const k of ['imageMsPerGb', 'bootMs', 'enrollDelayMs', 'shutdownMs', 'ignoreAcpiRate', 'tokenTtlSeconds'] as const) {
    if (t[k] !== undefined) next[k] = t[k];
  }
  if (t.rateLimit) Object.assign(next.rateLimit, t.rateLimit);
  return next;
}

export { parseOrThrow };
