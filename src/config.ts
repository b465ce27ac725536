import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { InvalidInputError } from './errors';
import { DEFAULT_FLEET_NAME, FLEET_NAME_PATTERN } from './fleet/fleet';
import type { WebhookSecretKeys } from './webhooks/secret-box';

/**
 * Configuration is read once, at start-up, from the environment. Every problem is collected and
 * reported together so an operator fixes a broken deployment in one round trip.
 * Secrets may also come from files (`<VAR>_FILE`), the usual way container orchestrators mount them.
 */

const SECRET_VARS = [
  'HETZNER_API_TOKEN',
  'HETZNER_PROJECTS',
  'TAILSCALE_OAUTH_CLIENT_SECRET',
  'API_TOKEN',
  'BULL_BOARD_PASSWORD',
  'WEBHOOK_SECRET_KEY',
  'WEBHOOK_SECRET_KEYS_PREVIOUS',
  'METRICS_TOKEN',
] as const;

const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    { message: `must be a URL (${protocols.join(' or ')})` },
  );

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const csv = z
  .string()
  .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean));

/** A 32-byte key: base64 (`openssl rand -base64 32`) or 64 hex digits. */
function decodeKey(v: string): Buffer | null {
  if (/^[0-9a-fA-F]{64}$/.test(v)) return Buffer.from(v, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(v)) return Buffer.from(v, 'base64');
  return null;
}

const KEY_MESSAGE = 'must be 32 random bytes as base64 (openssl rand -base64 32) or 64 hex digits';

const key32 = z.string().transform((v, ctx) => {
  const key = decodeKey(v.trim());
  if (!key) ctx.addIssue({ code: 'custom', message: KEY_MESSAGE });
  return key ?? z.NEVER;
});

const keyList = csv.transform((values, ctx) => {
  const keys = values.map(decodeKey);
  if (keys.some((k) => k === null)) ctx.addIssue({ code: 'custom', message: `each comma-separated key ${KEY_MESSAGE}` });
  return keys.filter((k): k is Buffer => k !== null);
});

const schema = z.object({
  DATABASE_URL: url(['postgres:', 'postgresql:']),
  REDIS_URL: url(['redis:', 'rediss:']),
  // One of the two (checked below): a single project `default`, or several, each with its own token.
  HETZNER_API_TOKEN: z.string().min(1).optional(),
  HETZNER_PROJECTS: z.string().transform((v, ctx) => {
    const parsed = parseProjects(v);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
    return typeof parsed === 'string' ? z.NEVER : parsed;
  }).optional(),
  HETZNER_PLACEMENTS: z.string().transform((v, ctx) => {
    const parsed = parsePlacements(v);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
    return typeof parsed === 'string' ? z.NEVER : parsed;
  }).optional(),
  PLACEMENT_COOLDOWN_SECONDS: int(0, 86_400).default(600),
  HETZNER_PUBLIC_IPV4: z.enum(['true', 'false'], { error: 'must be true or false' }).default('true'),
  HETZNER_API_URL: url(['http:', 'https:']).default('https://api.hetzner.cloud/v1'),
  TAILSCALE_OAUTH_CLIENT_ID: z.string().min(1, 'is required'),
  TAILSCALE_OAUTH_CLIENT_SECRET: z.string().min(1, 'is required'),
  TAILSCALE_API_URL: url(['http:', 'https:']).default('https://api.tailscale.com/api/v2'),
  TAILSCALE_TAILNET: z.string().min(1).default('-'),
  TAILSCALE_TAGS: csv
    .default(['tag:agent'])
    .refine((tags) => tags.length > 0 && tags.every((t) => /^tag:[A-Za-z0-9-]+$/.test(t)), {
      message: 'must be a comma-separated list of tags like tag:agent',
    }),
  API_TOKEN: z.string().min(16, 'must be at least 16 characters'),
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  ROLE: z.enum(['all', 'api', 'worker']).default('all'),
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  METRICS_PORT: int(0, 65535).optional(),
  METRICS_HOST: z.string().min(1).optional(),
  HETZNER_SERVER_TYPE: z.string().regex(/^[a-z0-9-]+$/, 'must be a server type name like cx22').default('cx22'),
  HETZNER_IMAGE: z.string().min(1).default('ubuntu-24.04'),
  HETZNER_LOCATION: z.string().regex(/^[a-z0-9-]+$/, 'must be a location name like fsn1').default('fsn1'),
  HETZNER_SSH_KEYS: csv.default([]),
  SHUTDOWN_TIMEOUT_SECONDS: int(1, 3600).default(60),
  ENROLLMENT_TIMEOUT_SECONDS: int(10, 3600).default(300),
  ACTION_TIMEOUT_SECONDS: int(10, 7200).default(600),
  POLL_INTERVAL_MS: int(10, 60_000).default(1000),
  WORKER_CONCURRENCY: int(1, 500).default(50),
  JOB_ATTEMPTS: int(1, 100).default(5),
  JOB_BACKOFF_MS: int(10, 3_600_000).default(5000),
  DRAIN_TIMEOUT_SECONDS: int(1, 3600).default(30),
  FLEET_NAME: z
    .string()
    .regex(FLEET_NAME_PATTERN, "must be 1-63 characters: letters or digits at both ends, letters, digits, '-', '_' or '.' inside (a Hetzner label value)")
    .default(DEFAULT_FLEET_NAME),
  /** Live (not destroyed) agents allowed at once; unset = no limit. */
  MAX_AGENTS: int(1, 1_000_000).optional(),
  QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]+$/).default('tailfleet'),
  ROLLBACK_SWEEP_INTERVAL_SECONDS: int(5, 86_400).default(60),
  RELAY_INTERVAL_MS: int(100, 60_000).default(3000),
  DB_OUTAGE_RETRY_MS: int(100, 300_000).default(5000),
  RECONCILE_INTERVAL_SECONDS: int(0, 86_400).default(300),
  RECONCILE_ORPHANS: z.enum(['report', 'delete']).default('report'),
  RECONCILE_GRACE_SECONDS: int(0, 86_400).default(900),
  AUTO_HIBERNATE_AFTER_HOURS: z.coerce.number().positive('must be a positive number of hours').max(8760).optional(),
  TAILFLEET_PUBLIC_URL: url(['http:', 'https:'])
    .refine((v) => /^https?:\/\/[^\s'"\\`$]+$/.test(v), { message: 'must not contain quotes, spaces, backslashes, backticks or $' })
    .optional(),
  POLICY_INTERVAL_SECONDS: int(1, 3600).default(30),
  EXPIRY_WARNING_SECONDS: int(0, 30 * 86400).default(600),
  MAX_AGENT_LIFETIME_HOURS: z.coerce.number().positive('must be a positive number of hours').max(87600).optional(),
  // Both or neither: without the pair the board's own login is off and only an admin token opens it.
  BULL_BOARD_USER: z.string().regex(/^[^:\s]{1,64}$/, 'must be 1–64 characters without ":" or spaces').optional(),
  BULL_BOARD_PASSWORD: z.string().min(8, 'must be at least 8 characters').optional(),
  WEBHOOK_ALLOW_PRIVATE_URLS: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
  WEBHOOK_ATTEMPTS: int(1, 50).default(16),
  WEBHOOK_BACKOFF_MS: int(10, 3_600_000).default(5000),
  WEBHOOK_TIMEOUT_SECONDS: int(1, 60).default(10),
  WEBHOOK_SECRET_KEY: key32.optional(),
  WEBHOOK_SECRET_KEYS_PREVIOUS: keyList.optional(),
  EVENT_STREAM_MAX_CONNECTIONS: int(1, 100_000).default(100),
  EVENT_STREAM_MAX_PER_TOKEN: int(1, 100_000).default(10),
  EVENT_STREAM_MAX_BUFFER_BYTES: int(16_384, 1_073_741_824).default(1_048_576),
  LONG_POLL_MAX_CONNECTIONS: int(1, 100_000).default(1000),
  LONG_POLL_MAX_PER_TOKEN: int(1, 100_000).default(100),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

type Env = z.output<typeof schema>;

const NAME = /^[a-z0-9-]+$/;

/** A Hetzner project of the deployment: its API token and, when known, its server limit. */
export interface HetznerProjectConfig {
  name: string;
  token: string;
  /** The project's server limit as the operator knows it; null = learned from the cloud's refusals. */
  maxServers: number | null;
}

/** Where a server may be created: a location and the server type to create there. */
export interface Placement {
  location: string;
  serverType: string;
}

/** `name=token;maxServers=50,name2=token2`: the projects, or a message saying what is wrong. */
export function parseProjects(value: string): HetznerProjectConfig[] | string {
  const projects: HetznerProjectConfig[] = [];
  for (const entry of value.split(',').map((e) => e.trim()).filter(Boolean)) {
    const [head, ...options] = entry.split(';').map((p) => p.trim());
    const eq = head.indexOf('=');
    const name = eq < 0 ? '' : head.slice(0, eq).trim();
    const token = eq < 0 ? '' : head.slice(eq + 1).trim();
    // The token is a secret: a message names the project (or the entry's position), never the token.
    const which = name || `entry ${projects.length + 1}`;
    if (!name || !token) return `${which}: each entry must be name=token (e.g. main=TOKEN;maxServers=50,spare=TOKEN2)`;
    if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(name)) return `${name}: a project name is 1-32 lower-case letters, digits, '-' or '_'`;
    if (projects.some((p) => p.name === name)) return `${name}: project named twice`;
    let maxServers: number | null = null;
    for (const option of options.filter(Boolean)) {
      const m = /^maxServers=(\d{1,7})$/.exec(option);
      if (!m || Number(m[1]) < 1) return `${name}: unknown option "${option.split('=')[0]}" (the only option is maxServers=N, N ≥ 1)`;
      maxServers = Number(m[1]);
    }
    projects.push({ name, token, maxServers });
  }
  return projects.length > 0 ? projects : 'must name at least one project (name=token)';
}

/** `fsn1:cx22,nbg1:cx22,hel1:cx32`: placements in order of preference, or a message saying what is wrong. */
export function parsePlacements(value: string): Placement[] | string {
  const placements: Placement[] = [];
  for (const entry of value.split(',').map((e) => e.trim()).filter(Boolean)) {
    const [location, serverType, ...rest] = entry.split(':').map((p) => p.trim());
    if (!location || !serverType || rest.length > 0 || !NAME.test(location) || !NAME.test(serverType)) {
      return `"${entry}" is not location:serverType (e.g. fsn1:cx22,nbg1:cx22,hel1:cx32)`;
    }
    if (placements.some((p) => p.location === location && p.serverType === serverType)) return `${entry}: named twice`;
    placements.push({ location, serverType });
  }
  return placements.length > 0 ? placements : 'must name at least one location:serverType';
}

export interface Config {
  databaseUrl: string;
  redisUrl: string;
  role: Env['ROLE'];
  /** This deployment's fleet: the servers and devices it may touch (src/fleet/fleet.ts). */
  fleetName: string;
  /** MAX_AGENTS: live agents allowed at once; null = no limit. */
  maxAgents: number | null;
  http: {
    host: string;
    port: number;
    /** The bootstrap admin token (principal name `bootstrap`). */
    apiToken: string;
    /** Bull Board's own HTTP Basic login; null when BULL_BOARD_USER or BULL_BOARD_PASSWORD is unset. */
    board: { user: string; password: string } | null;
  };
  hetzner: {
    apiUrl: string;
    /** The first project's token (the only one's unless HETZNER_PROJECTS names several). */
    token: string;
    /** HETZNER_PROJECTS, or HETZNER_API_TOKEN as the single project `default`. */
    projects: HetznerProjectConfig[];
    /** HETZNER_PLACEMENTS: where an agent without placements of its own goes, in order; default HETZNER_LOCATION:HETZNER_SERVER_TYPE. */
    placements: Placement[];
    /** How long a (location, type) pair the cloud refused is skipped by every worker. */
    placementCooldownSeconds: number;
    /** HETZNER_PUBLIC_IPV4: whether servers get a primary IPv4 unless their agent says otherwise. */
    publicIpv4: boolean;
    serverType: string;
    image: string;
    location: string;
    sshKeys: string[];
    shutdownTimeoutSeconds: number;
    actionTimeoutSeconds: number;
  };
  tailscale: {
    apiUrl: string;
    clientId: string;
    clientSecret: string;
    tailnet: string;
    tags: string[];
    enrollmentTimeoutSeconds: number;
  };
  pollIntervalMs: number;
  queues: {
    prefix: string;
    concurrency: number;
    attempts: number;
    backoffMs: number;
    drainTimeoutSeconds: number;
    rollbackSweepIntervalSeconds: number;
    /** Time between passes of the outbox relay. */
    relayIntervalMs: number;
    /** How long a job waits before trying again when PostgreSQL is unreachable (no attempt spent). */
    dbOutageRetryMs: number;
  };
  reconcile: {
    intervalSeconds: number;
    orphans: 'report' | 'delete';
    graceSeconds: number;
    /** Paused agents older than this are hibernated by the policy loop (src/policy); null = never. */
    autoHibernateAfterHours: number | null;
  };
  policy: {
    /** TAILFLEET_PUBLIC_URL: the API as agents' machines reach it; null = no activity reporter is installed. */
    publicUrl: string | null;
    /** How often the policy loop looks at every agent: an idle step or an expiry is acted on within this. */
    intervalSeconds: number;
    /** How long before an agent's expiry its `agent.expiring` webhook goes out. */
    expiryWarningSeconds: number;
    /** The longest any agent lives (from its creation); null = no fleet limit. */
    maxAgentLifetimeHours: number | null;
  };
  webhooks: {
    /** Accept receivers on loopback, private and link-local addresses (off: refused at subscription and at delivery). */
    allowPrivateUrls: boolean;
    /** Attempts per delivery and the first retry delay; the delay doubles each time. */
    attempts: number;
    backoffMs: number;
    /** How long a receiver has to answer one attempt. */
    timeoutMs: number;
    /** WEBHOOK_SECRET_KEY (+ _PREVIOUS): encrypts secrets at rest; null = stored in clear (warned at start). */
    secretKeys: WebhookSecretKeys | null;
  };
  metrics: {
    /** METRICS_TOKEN: the Bearer token GET /metrics requires; null = open. */
    token: string | null;
    /** METRICS_PORT / METRICS_HOST: /metrics on a listener of its own and not on PORT; null = on PORT. */
    listen: { host: string; port: number } | null;
  };
  /** Open connections the API holds for clients: what one token, and all of them, may keep open at once. */
  streams: {
    /** GET /v1/events/stream connections. */
    eventStreams: { total: number; perToken: number };
    /** Bytes a slow event-stream client may have waiting before it is cut off (told to resume from its last id). */
    eventStreamMaxBufferBytes: number;
    /** GET /v1/operations/:id?wait long polls. */
    longPolls: { total: number; perToken: number };
  };
  logLevel: Env['LOG_LEVEL'];
}

export class ConfigError extends InvalidInputError {
  override readonly code = 'invalid_config';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

function resolveFileSecrets(env: NodeJS.ProcessEnv, problems: string[]): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = { ...env };
  for (const name of SECRET_VARS) {
    const file = env[`${name}_FILE`];
    if (!file) continue;
    if (env[name]) {
      problems.push(`${name}: set either ${name} or ${name}_FILE, not both`);
      continue;
    }
    try {
      out[name] = readFileSync(file, 'utf8').trim();
    } catch (err) {
      problems.push(`${name}_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  // An empty variable means "not set": compose files and shells often export VAR= for optional settings.
  for (const [k, v] of Object.entries(out)) if (v === '') delete out[k];
  return out;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const raw = resolveFileSecrets(env, problems);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const name = issue.path.join('.') || '(environment)';
      const message = issue.code === 'invalid_type' && raw[name] === undefined ? 'is required' : issue.message;
      problems.push(`${name}: ${message}`);
    }
  }
  if (parsed.success && parsed.data.WEBHOOK_SECRET_KEYS_PREVIOUS && !parsed.data.WEBHOOK_SECRET_KEY) {
    problems.push('WEBHOOK_SECRET_KEYS_PREVIOUS: needs WEBHOOK_SECRET_KEY, the key new secrets are encrypted with');
  }
  if (raw.HETZNER_API_TOKEN === undefined && raw.HETZNER_PROJECTS === undefined) {
    problems.push('HETZNER_API_TOKEN: is required (or HETZNER_PROJECTS, for several Hetzner projects)');
  } else if (raw.HETZNER_API_TOKEN !== undefined && raw.HETZNER_PROJECTS !== undefined) {
    problems.push('HETZNER_PROJECTS: set either HETZNER_PROJECTS or HETZNER_API_TOKEN, not both (HETZNER_API_TOKEN alone is the project `default`)');
  }
  if (raw.METRICS_HOST !== undefined && raw.METRICS_PORT === undefined) {
    problems.push('METRICS_HOST: set METRICS_PORT too (METRICS_HOST is the address of the metrics listener)');
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  const e = parsed.data;
  const projects = e.HETZNER_PROJECTS ?? [{ name: 'default', token: e.HETZNER_API_TOKEN!, maxServers: null }];
  return {
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    role: e.ROLE,
    fleetName: e.FLEET_NAME,
    maxAgents: e.MAX_AGENTS ?? null,
    http: {
      host: e.HOST,
      port: e.PORT,
      apiToken: e.API_TOKEN,
      board: e.BULL_BOARD_USER && e.BULL_BOARD_PASSWORD ? { user: e.BULL_BOARD_USER, password: e.BULL_BOARD_PASSWORD } : null,
    },
    hetzner: {
      apiUrl: e.HETZNER_API_URL.replace(/\/+$/, ''),
      token: projects[0].token,
      projects,
      placements: e.HETZNER_PLACEMENTS ?? [{ location: e.HETZNER_LOCATION, serverType: e.HETZNER_SERVER_TYPE }],
      placementCooldownSeconds: e.PLACEMENT_COOLDOWN_SECONDS,
      publicIpv4: e.HETZNER_PUBLIC_IPV4 === 'true',
      serverType: e.HETZNER_SERVER_TYPE,
      image: e.HETZNER_IMAGE,
      location: e.HETZNER_LOCATION,
      sshKeys: e.HETZNER_SSH_KEYS,
      shutdownTimeoutSeconds: e.SHUTDOWN_TIMEOUT_SECONDS,
      actionTimeoutSeconds: e.ACTION_TIMEOUT_SECONDS,
    },
    tailscale: {
      apiUrl: e.TAILSCALE_API_URL.replace(/\/+$/, ''),
      clientId: e.TAILSCALE_OAUTH_CLIENT_ID,
      clientSecret: e.TAILSCALE_OAUTH_CLIENT_SECRET,
      tailnet: e.TAILSCALE_TAILNET,
      tags: e.TAILSCALE_TAGS,
      enrollmentTimeoutSeconds: e.ENROLLMENT_TIMEOUT_SECONDS,
    },
    pollIntervalMs: e.POLL_INTERVAL_MS,
    queues: {
      prefix: e.QUEUE_PREFIX,
      concurrency: e.WORKER_CONCURRENCY,
      attempts: e.JOB_ATTEMPTS,
      backoffMs: e.JOB_BACKOFF_MS,
      drainTimeoutSeconds: e.DRAIN_TIMEOUT_SECONDS,
      rollbackSweepIntervalSeconds: e.ROLLBACK_SWEEP_INTERVAL_SECONDS,
      relayIntervalMs: e.RELAY_INTERVAL_MS,
      dbOutageRetryMs: e.DB_OUTAGE_RETRY_MS,
    },
    reconcile: {
      intervalSeconds: e.RECONCILE_INTERVAL_SECONDS,
      orphans: e.RECONCILE_ORPHANS,
      graceSeconds: e.RECONCILE_GRACE_SECONDS,
      autoHibernateAfterHours: e.AUTO_HIBERNATE_AFTER_HOURS ?? null,
    },
    policy: {
      publicUrl: e.TAILFLEET_PUBLIC_URL ? e.TAILFLEET_PUBLIC_URL.replace(/\/+$/, '') : null,
      intervalSeconds: e.POLICY_INTERVAL_SECONDS,
      expiryWarningSeconds: e.EXPIRY_WARNING_SECONDS,
      maxAgentLifetimeHours: e.MAX_AGENT_LIFETIME_HOURS ?? null,
    },
    webhooks: {
      allowPrivateUrls: e.WEBHOOK_ALLOW_PRIVATE_URLS === 'true',
      attempts: e.WEBHOOK_ATTEMPTS,
      backoffMs: e.WEBHOOK_BACKOFF_MS,
      timeoutMs: e.WEBHOOK_TIMEOUT_SECONDS * 1000,
      secretKeys: e.WEBHOOK_SECRET_KEY ? { primary: e.WEBHOOK_SECRET_KEY, previous: e.WEBHOOK_SECRET_KEYS_PREVIOUS ?? [] } : null,
    },
    metrics: {
      token: e.METRICS_TOKEN ?? null,
      listen: e.METRICS_PORT === undefined ? null : { host: e.METRICS_HOST ?? e.HOST, port: e.METRICS_PORT },
    },
    streams: {
      eventStreams: { total: e.EVENT_STREAM_MAX_CONNECTIONS, perToken: e.EVENT_STREAM_MAX_PER_TOKEN },
      eventStreamMaxBufferBytes: e.EVENT_STREAM_MAX_BUFFER_BYTES,
      longPolls: { total: e.LONG_POLL_MAX_CONNECTIONS, perToken: e.LONG_POLL_MAX_PER_TOKEN },
    },
    logLevel: e.LOG_LEVEL,
  };
}
