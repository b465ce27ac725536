#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ApiError, CliError, TailfleetClient, type ApiResponse } from './client';
import { fields, table } from './table';
import { followOperation, type OperationBody } from './wait';
import { AGENT_COMMAND_TYPES, commandOf } from '../operations/types';
import { UUID } from '../db/uuid';

/**
 * tailfleet: the command line for a tailfleet API. Reads TAILFLEET_URL and TAILFLEET_TOKEN (the
 * flags --url and --token win). Human output is a table; --json prints the API's JSON as it came.
 */

const DEFAULT_URL = 'http://127.0.0.1:3000';

/** Collects a repeatable option. */
const collect = (value: string, previous: string[] = []) => [...previous, value];

/** `--label key=value`, repeatable, into an object. */
function labelsOf(terms: string[] | undefined): Record<string, string> | undefined {
  if (!terms?.length) return undefined;
  const labels: Record<string, string> = {};
  for (const term of terms) {
    const eq = term.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`--label ${term}: use key=value`);
    labels[term.slice(0, eq)] = term.slice(eq + 1);
  }
  return labels;
}

/**
 * `--user-data @file` reads the file; anything else is the user data itself. A relative path is the
 * caller's: `npm run cli` runs in the package root and names the directory it was started in INIT_CWD.
 */
function userDataOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!value.startsWith('@')) return value;
  try {
    return readFileSync(resolve(process.env.INIT_CWD ?? process.cwd(), value.slice(1)), 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`--user-data ${value}: ${(err as Error).message}`);
  }
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** `90s`, `30m`, `8h`, `30d` (or plain seconds) into seconds. */
const durationOf = (what: string) => (value: string) => {
  const m = /^(\d{1,9})([smhd]?)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`${what} must be a duration such as 90s, 30m, 8h or 30d.`);
  return Number(m[1]) * UNIT_SECONDS[m[2] || 's']!;
};

/** `stop@30m,hibernate@1d,destroy@30d` into an idle ladder. */
function ladderOf(value: string): Array<{ afterSeconds: number; action: string }> {
  return value.split(',').map((step) => {
    const [action, after] = step.split('@');
    if (!action || !after || !['stop', 'hibernate', 'destroy'].includes(action)) {
      throw new InvalidArgumentError(`--idle ${step}: use action@duration, the action one of stop, hibernate, destroy`);
    }
    return { action, afterSeconds: durationOf('--idle')(after) };
  });
}

interface GlobalOptions {
  url?: string;
  token?: string;
  json?: boolean;
  pollInterval: number;
  timeout: number;
}

const positiveInt = (what: string) => (value: string) => {
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw new InvalidArgumentError(`${what} must be a positive integer.`);
  return Number(value);
};

/** What every action needs: the client, the output mode and the waiting settings. */
class Context {
  readonly client: TailfleetClient;
  readonly json: boolean;
  readonly options: GlobalOptions;

  constructor(command: Command) {
    this.options = command.optsWithGlobals<GlobalOptions>();
    const url = this.options.url ?? process.env.TAILFLEET_URL ?? DEFAULT_URL;
    const token = this.options.token ?? process.env.TAILFLEET_TOKEN;
    if (!token) throw new CliError('error: no API token: set TAILFLEET_TOKEN or pass --token <token>', 2);
    try {
      new URL(url);
    } catch {
      throw new CliError(`error: --url / TAILFLEET_URL is not a URL: ${url}`, 2);
    }
    this.client = new TailfleetClient({ baseUrl: url, token });
    this.json = this.options.json === true;
  }

  /** --json: the body exactly as the API sent it; otherwise the human rendering. */
  print(res: ApiResponse<unknown>, human: () => string): void {
    if (this.json) {
      if (res.text) process.stdout.write(res.text.endsWith('\n') ? res.text : `${res.text}\n`);
      return;
    }
    const text = human();
    if (text) process.stdout.write(`${text}\n`);
  }

  note(text: string): void {
    if (!this.json) process.stderr.write(`${text}\n`);
  }

  /** After a command that started an operation: follow it when asked, and fail when it failed. */
  async started(res: ApiResponse<{ operation: OperationBody['operation'] }>, wait: boolean, human: () => string): Promise<void> {
    if (!wait) {
      this.print(res, human);
      this.note(`follow it with: tailfleet ops wait ${res.body.operation.id}`);
      return;
    }
    if (!this.json) process.stdout.write(`${human()}\n`);
    await this.follow(res.body.operation.id);
  }

  async follow(operationId: string): Promise<void> {
    const final = await followOperation(this.client, operationId, {
      intervalMs: this.options.pollInterval,
      timeoutMs: this.options.timeout * 1000,
      out: process.stderr,
    });
    const op = final.body.operation;
    this.print(final, () => `${op.type} ${op.id} ${op.status}`);
    if (op.status !== 'succeeded') {
      const where = op.failedStep ? ` at ${op.failedStep}` : '';
      throw new CliError(`error: ${op.type} ${op.id} ${op.status}${where}${op.error ? `: ${op.error}` : ''}`);
    }
  }
}

type Row = Record<string, any>;

const query = (params: Record<string, string | number | string[] | undefined>) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) for (const item of v) q.append(k, item);
    else if (v !== undefined) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
};

/** Lists a paged collection: one page, or with `all` every page (printed as one). */
async function listPages(ctx: Context, path: string, params: Record<string, string | number | string[] | undefined>, all: boolean) {
  const first = await ctx.client.request<{ items: Row[]; nextCursor: string | null }>('GET', path + query(params));
  if (!all) return first;
  const items = [...first.body.items];
  let cursor = first.body.nextCursor;
  while (cursor) {
    const next = await ctx.client.request<{ items: Row[]; nextCursor: string | null }>('GET', path + query({ ...params, cursor }));
    items.push(...next.body.items);
    cursor = next.body.nextCursor;
  }
  const body = { items, nextCursor: null };
  return { status: first.status, text: JSON.stringify(body), body };
}

function operationFields(op: Row, job?: Row | null) {
  return fields([
    ['id', op.id],
    ['type', op.type],
    ['status', op.status],
    ['progress', `${op.progress}%`],
    ['step', op.currentStep],
    ['agent', op.agentId],
    ['attempts', op.attempts],
    ['error', op.error],
    ['failed step', op.failedStep],
    ['requested', op.requestedAt],
    ['started', op.startedAt],
    ['finished', op.finishedAt],
    ...(job ? ([['queue job', `${job.queue} ${job.id} ${job.state}`]] as Array<[string, string]>) : []),
  ]);
}

const accepted = (verb: string, body: { operation: Row }) =>
  `${verb}: operation ${body.operation.id} ${body.operation.status}`;


/**
 * An agent named on the command line by its id or its name (as hcloud takes either). A name is
 * looked up with GET /v1/agents?name=: the agent that is not destroyed wins (names are unique among
 * those); several destroyed ones and nothing live is ambiguous, and so is an unknown name an error.
 */
async function agentIdOf(ctx: Context, ref: string): Promise<string> {
  if (UUID.test(ref)) return ref;
  const res = await ctx.client.request<{ items: Row[] }>('GET', `/v1/agents${query({ name: ref, limit: 100 })}`);
  const named = res.body.items;
  const live = named.filter((a) => a.status !== 'destroyed');
  if (live.length === 1) return live[0]!.id as string;
  if (named.length === 1) return named[0]!.id as string;
  if (named.length === 0) throw new CliError(`error: no agent is named "${ref}" (give its name or id; tailfleet agents list)`);
  const which = (live.length > 1 ? live : named).map((a) => `${a.id} (${a.status})`).join(', ');
  throw new CliError(`error: the name "${ref}" is ambiguous: ${which}; give the id`);
}

const agentPath = async (ctx: Context, ref: string, tail = '') => `/v1/agents/${encodeURIComponent(await agentIdOf(ctx, ref))}${tail}`;

function agentsCommand(program: Command): void {
  const agents = program.command('agents').description('agent machines');

  agents
    .command('list')
    .description('list agents, newest first')
    .option('--status <statuses>', 'only these statuses (comma-separated)')
    .option('--name <name>', 'only the agents with this name')
    .option('--label <key=value>', 'only agents with this label (repeatable: all must match)', collect)
    .option('--limit <n>', 'page size (1–100)', positiveInt('--limit'))
    .option('--cursor <cursor>', 'continue after a previous page')
    .option('--all', 'follow every page')
    .action(async (opts: { status?: string; name?: string; label?: string[]; limit?: number; cursor?: string; all?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await listPages(
        ctx,
        '/v1/agents',
        { status: opts.status, name: opts.name, label: opts.label, limit: opts.limit, cursor: opts.cursor },
        opts.all === true,
      );
      ctx.print(res, () =>
        table(
          ['ID', 'NAME', 'STATUS', 'INSTANCE', 'SERVER IP', 'TAILNET IP', 'CREATED'],
          res.body.items.map((a) => [a.id, a.name, a.status, a.instance?.status, a.instance?.serverIp, a.instance?.tailscaleIp, a.createdAt]),
        ),
      );
      if (res.body.nextCursor) ctx.note(`more: tailfleet agents list --cursor ${res.body.nextCursor}`);
    });

  agents
    .command('get <agent>')
    .description('an agent (id or name) with its instance and running operation')
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('GET', await agentPath(ctx, ref));
      const { agent, instance, operation } = res.body;
      ctx.print(res, () =>
        fields([
          ['id', agent.id],
          ['name', agent.name],
          ['status', agent.status],
          ['created', agent.createdAt],
          ['instance', instance?.status],
          ['server', instance?.serverId ? `${instance.serverId} (${instance.serverName ?? '-'})` : null],
          ['server ip', instance?.serverIp],
          ['tailnet ip', instance?.tailscaleIp],
          ['location', instance?.location],
          ['server type', instance?.serverType],
          ['image', instance?.image],
          ['labels', agent.labels && Object.keys(agent.labels).length ? Object.entries(agent.labels).map(([k, v]) => `${k}=${v}`).join(', ') : null],
          ['error', instance?.error],
          ['operation', operation ? `${operation.type} ${operation.id} ${operation.status} ${operation.progress}%` : null],
          ['monthly cost', agent.cost ? `${agent.cost.monthly} ${agent.cost.currency}` : null],
          ['ready', agent.ready ? 'yes' : 'no'],
          ['bootstrap', agent.bootstrap ? `${agent.bootstrap.status} at ${agent.bootstrap.at}` : null],
          ['last activity', agent.lastActivity ? `${agent.lastActivity.kind} at ${agent.lastActivity.at}` : null],
          ['idle ladder', agent.spec?.idle ? agent.spec.idle.map((s: Row) => `${s.action}@${s.afterSeconds}s`).join(', ') : null],
          ['expires', agent.expiresAt],
        ]),
      );
    });

  agents
    .command('extend <agent>')
    .description("move the agent's expiry (id or name): --ttl from now, or --expires-at")
    .option('--ttl <duration>', 'expire this long from now, e.g. 2h', durationOf('--ttl'))
    .option('--expires-at <time>', 'expire at this ISO 8601 time')
    .action(async (ref: string, opts: { ttl?: number; expiresAt?: string }, cmd: Command) => {
      const ctx = new Context(cmd);
      if ((opts.ttl === undefined) === (opts.expiresAt === undefined)) throw new CliError('error: give --ttl or --expires-at (one of them)', 2);
      const res = await ctx.client.request<Row>('POST', await agentPath(ctx, ref, '/extend'), {
        body: opts.ttl !== undefined ? { ttlSeconds: opts.ttl } : { expiresAt: opts.expiresAt },
      });
      ctx.print(res, () => `${res.body.name} expires at ${res.body.expiresAt}`);
    });

  agents
    .command('create <name>')
    .description('create an agent and provision its server')
    .option('--location <location>', 'Hetzner location, e.g. fsn1')
    .option('--server-type <type>', 'Hetzner server type, e.g. cx22')
    .option('--image <image>', 'image name or snapshot id, e.g. ubuntu-24.04')
    .option('--ssh-key <key>', 'Hetzner SSH key name or id (repeatable)', collect)
    .option('--label <key=value>', 'a label of the agent and its servers (repeatable)', collect)
    .option('--user-data <data>', 'the agent’s own cloud-init user data (#cloud-config, #! script, MIME, …); @file reads a file')
    .option('--idle <steps>', 'idle ladder: comma-separated action@duration, e.g. stop@30m,hibernate@1d,destroy@30d', ladderOf)
    .option('--ttl <duration>', 'expire (destroy) the agent this long from now, e.g. 8h', durationOf('--ttl'))
    .option('--expires-at <time>', 'expire (destroy) the agent at this ISO 8601 time')
    .option('--no-reporter', 'install no activity reporter on the machine')
    .option('--idempotency-key <key>', 'makes the request safe to repeat')
    .option('--wait', 'follow the provision until it is final')
    .action(async (
      name: string,
      opts: {
        location?: string;
        serverType?: string;
        image?: string;
        sshKey?: string[];
        label?: string[];
        userData?: string;
        idle?: Array<{ afterSeconds: number; action: string }>;
        ttl?: number;
        expiresAt?: string;
        reporter?: boolean;
        idempotencyKey?: string;
        wait?: boolean;
      },
      cmd: Command,
    ) => {
      const ctx = new Context(cmd);
      const labels = labelsOf(opts.label);
      const userData = userDataOf(opts.userData);
      const res = await ctx.client.request<Row & { operation: OperationBody['operation'] }>('POST', '/v1/agents', {
        body: {
          name,
          ...(opts.location ? { location: opts.location } : {}),
          ...(opts.serverType ? { serverType: opts.serverType } : {}),
          ...(opts.image ? { image: opts.image } : {}),
          ...(opts.sshKey ? { sshKeys: opts.sshKey } : {}),
          ...(labels ? { labels } : {}),
          ...(userData !== undefined ? { userData } : {}),
          ...(opts.idle ? { idle: opts.idle } : {}),
          ...(opts.ttl !== undefined ? { ttlSeconds: opts.ttl } : {}),
          ...(opts.expiresAt ? { expiresAt: opts.expiresAt } : {}),
          ...(opts.reporter === false ? { reporter: false } : {}),
        },
        headers: opts.idempotencyKey ? { 'idempotency-key': opts.idempotencyKey } : {},
      });
      await ctx.started(res, opts.wait === true, () => `agent ${res.body.agent.id} ${res.body.agent.name}\n${accepted('provision', res.body)}`);
    });

  // One verb per command an operation descriptor declares (src/operations/types).
  for (const [verb, what] of AGENT_COMMAND_TYPES.map((t) => [t, commandOf(t).cli] as const)) {
    agents
      .command(`${verb} <agent>`)
      .description(`${what} (the agent by id or name)`)
      .option('--idempotency-key <key>', 'makes the request safe to repeat')
      .option('--wait', 'follow the operation until it is final')
      .action(async (ref: string, opts: { idempotencyKey?: string; wait?: boolean }, cmd: Command) => {
        const ctx = new Context(cmd);
        const res = await ctx.client.request<{ operation: OperationBody['operation'] }>('POST', await agentPath(ctx, ref, `/${verb}`), {
          headers: opts.idempotencyKey ? { 'idempotency-key': opts.idempotencyKey } : {},
        });
        await ctx.started(res, opts.wait === true, () => accepted(verb, res.body));
      });
  }
  reprovisionCommand(agents);
}

function leasesCommand(program: Command): void {
  const leases = program.command('leases').description('leases: while one is live its agent is never stopped for idleness, expired or claimed');
  const leaseRow = (l: Row) => [l.id, l.holder, l.expiresAt, l.live ? 'live' : l.releasedAt ? 'released' : 'expired'];

  leases
    .command('take <agent>')
    .description('take a lease on an agent (id or name)')
    .requiredOption('--holder <holder>', 'who holds it (a CI job, a user)')
    .requiredOption('--ttl <duration>', 'how long it lives unless renewed or released, e.g. 2h', durationOf('--ttl'))
    .action(async (ref: string, opts: { holder: string; ttl: number }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('POST', await agentPath(ctx, ref, '/leases'), { body: { holder: opts.holder, ttlSeconds: opts.ttl } });
      ctx.print(res, () => fields([['id', res.body.id], ['holder', res.body.holder], ['expires', res.body.expiresAt]]));
    });

  leases
    .command('list <agent>')
    .description("an agent's live leases")
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ items: Row[] }>('GET', await agentPath(ctx, ref, '/leases'));
      ctx.print(res, () => table(['ID', 'HOLDER', 'EXPIRES', 'STATE'], res.body.items.map(leaseRow)));
    });

  leases
    .command('renew <agent> <lease>')
    .description('renew a live lease: it lives --ttl from now')
    .requiredOption('--ttl <duration>', 'e.g. 2h', durationOf('--ttl'))
    .action(async (ref: string, lease: string, opts: { ttl: number }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('POST', await agentPath(ctx, ref, `/leases/${encodeURIComponent(lease)}/renew`), { body: { ttlSeconds: opts.ttl } });
      ctx.print(res, () => `lease ${res.body.id} expires at ${res.body.expiresAt}`);
    });

  leases
    .command('release <agent> <lease>')
    .description('release a lease; idle time counts from now')
    .action(async (ref: string, lease: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('DELETE', await agentPath(ctx, ref, `/leases/${encodeURIComponent(lease)}`));
      ctx.print(res, () => `released ${res.body.id}`);
    });
}

function reprovisionCommand(agents: Command): void {
  agents
    .command('reprovision <agent>')
    .description('give an agent in error (id or name) a fresh instance with the same spec')
    .option('--idempotency-key <key>', 'makes the request safe to repeat')
    .option('--wait', 'follow the provision until it is final')
    .action(async (ref: string, opts: { idempotencyKey?: string; wait?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ operation: OperationBody['operation'] }>('POST', await agentPath(ctx, ref, '/reprovision'), {
        headers: opts.idempotencyKey ? { 'idempotency-key': opts.idempotencyKey } : {},
      });
      await ctx.started(res, opts.wait === true, () => accepted('provision', res.body));
    });
}

function opsCommand(program: Command): void {
  const ops = program.command('ops').description('operations (accepted commands and their progress)');

  ops
    .command('get <id>')
    .description('state, progress and error of an operation')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('GET', `/v1/operations/${encodeURIComponent(id)}`);
      ctx.print(res, () => operationFields(res.body.operation, res.body.job));
    });

  ops
    .command('cancel <id>')
    .description('cancel an operation that is still queued')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ operation: OperationBody['operation'] }>('POST', `/v1/operations/${encodeURIComponent(id)}/cancel`);
      ctx.print(res, () => `operation ${res.body.operation.id} ${res.body.operation.status}`);
    });

  ops
    .command('wait <id>')
    .description('follow an operation until it is final; fails when it does')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await new Context(cmd).follow(id);
    });

  ops
    .command('list')
    .description('list operations, newest first')
    .option('--status <statuses>', 'only these statuses (comma-separated)')
    .option('--type <types>', 'only these types (comma-separated)')
    .option('--agent <agent>', 'only operations on this agent (id or name)')
    .option('--since <time>', 'only operations requested at or after this ISO 8601 time')
    .option('--limit <n>', 'page size (1–100)', positiveInt('--limit'))
    .option('--cursor <cursor>', 'continue after a previous page')
    .option('--all', 'follow every page')
    .action(async (opts: { status?: string; type?: string; agent?: string; since?: string; limit?: number; cursor?: string; all?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const agentId = opts.agent === undefined ? undefined : await agentIdOf(ctx, opts.agent);
      const params = { status: opts.status, type: opts.type, agentId, since: opts.since, limit: opts.limit, cursor: opts.cursor };
      const res = await listPages(ctx, '/v1/operations', params, opts.all === true);
      ctx.print(res, () =>
        table(
          ['ID', 'TYPE', 'STATUS', 'PROGRESS', 'STEP', 'AGENT', 'REQUESTED'],
          res.body.items.map((o) => [o.id, o.type, o.status, `${o.progress}%`, o.currentStep, o.agentId, o.requestedAt]),
        ),
      );
      if (res.body.nextCursor) ctx.note(`more: tailfleet ops list --cursor ${res.body.nextCursor}`);
    });
}

function tokensCommand(program: Command): void {
  const tokens = program.command('tokens').description('named API tokens (needs an admin token)');

  tokens
    .command('create <name>')
    .description('create a token; its secret is shown only now')
    .addOption(new Option('--scope <scope>', 'what the token may do').choices(['read', 'operate', 'admin']).makeOptionMandatory())
    .option('--expires-at <time>', 'ISO 8601 time after which the token stops working')
    .action(async (name: string, opts: { scope: string; expiresAt?: string }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('POST', '/v1/tokens', {
        body: { name, scope: opts.scope, ...(opts.expiresAt ? { expiresAt: opts.expiresAt } : {}) },
      });
      const t = res.body;
      ctx.print(res, () =>
        fields([
          ['id', t.id],
          ['name', t.name],
          ['scope', t.scope],
          ['expires', t.expiresAt ?? 'never'],
          ['token', t.token],
        ]),
      );
      ctx.note('Store the token now: it is not shown again.');
    });

  tokens
    .command('list')
    .description('list tokens (never their secrets)')
    .option('--include-revoked', 'also list revoked tokens')
    .action(async (opts: { includeRevoked?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ items: Row[] }>('GET', `/v1/tokens${opts.includeRevoked ? '?includeRevoked=true' : ''}`);
      ctx.print(res, () =>
        table(
          ['ID', 'NAME', 'SCOPE', 'PREFIX', 'CREATED', 'EXPIRES', 'LAST USED', 'REVOKED'],
          res.body.items.map((t) => [t.id, t.name, t.scope, t.tokenPrefix, t.createdAt, t.expiresAt, t.lastUsedAt, t.revokedAt]),
        ),
      );
    });

  tokens
    .command('revoke <id>')
    .description('revoke a token; its next request is refused')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
      ctx.print(res, () => `revoked ${id}`);
    });
}

const WEBHOOK_EVENTS = ['operation.succeeded', 'operation.failed', 'operation.cancelled', 'agent.status_changed', 'agent.expiring', 'finding.resolved'];

function webhooksCommand(program: Command): void {
  const webhooks = program.command('webhooks').description('signed webhooks (needs an admin token)');

  webhooks
    .command('create <url>')
    .description('subscribe a URL to events; its signing secret is shown only now')
    .option('--events <types>', `comma-separated event types (default: all of ${WEBHOOK_EVENTS.join(', ')})`)
    .action(async (url: string, opts: { events?: string }, cmd: Command) => {
      const ctx = new Context(cmd);
      const events = opts.events?.split(',').map((e) => e.trim()).filter(Boolean);
      const res = await ctx.client.request<Row>('POST', '/v1/webhooks', { body: { url, ...(events ? { events } : {}) } });
      const w = res.body;
      ctx.print(res, () =>
        fields([
          ['id', w.id],
          ['url', w.url],
          ['events', (w.events as string[]).join(', ')],
          ['secret', w.secret],
        ]),
      );
      ctx.note('Store the secret now: it is not shown again.');
    });

  webhooks
    .command('list')
    .description('list subscriptions (never their secrets)')
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ items: Row[] }>('GET', '/v1/webhooks');
      ctx.print(res, () =>
        table(
          ['ID', 'URL', 'EVENTS', 'CREATED BY', 'CREATED'],
          res.body.items.map((w) => [w.id, w.url, (w.events as string[]).join(','), w.createdBy, w.createdAt]),
        ),
      );
    });

  webhooks
    .command('delete <id>')
    .description('delete a subscription and its deliveries')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request('DELETE', `/v1/webhooks/${encodeURIComponent(id)}`);
      ctx.print(res, () => `deleted ${id}`);
    });

  webhooks
    .command('deliveries <id>')
    .description("a subscription's deliveries, newest first, with their last attempt")
    .option('--limit <n>', 'deliveries per page (≤ 100)', positiveInt('--limit'))
    .option('--all', 'every page')
    .action(async (id: string, opts: { limit?: number; all?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await listPages(ctx, `/v1/webhooks/${encodeURIComponent(id)}/deliveries`, { limit: opts.limit }, opts.all === true);
      ctx.print(res, () =>
        table(
          ['ID', 'TYPE', 'STATUS', 'ATTEMPTS', 'LAST ANSWER', 'LAST ERROR', 'OCCURRED'],
          res.body.items.map((d) => {
            const last = (d.attemptLog as Row[]).at(-1);
            return [d.id, d.type, d.status, d.attempts, last?.status, last?.error, d.occurredAt];
          }),
        ),
      );
    });
}

/** `--schedule "<cron>@<zone>=<minReady>"`, repeatable, e.g. "0 8 * * 1-5@Europe/Berlin=5". */
function schedulesOf(terms: string[] | undefined): Array<{ cron: string; timezone: string; minReady: number }> | undefined {
  if (!terms) return undefined;
  return terms.map((term) => {
    const m = /^(.+)@([^@=]+)=(\d{1,9})$/.exec(term.trim());
    if (!m) throw new InvalidArgumentError(`--schedule ${term}: use "<cron>@<time zone>=<minReady>", e.g. "0 8 * * 1-5@Europe/Berlin=5"`);
    return { cron: m[1]!.trim(), timezone: m[2]!.trim(), minReady: Number(m[3]) };
  });
}

const nonNegativeInt = (what: string) => (value: string) => {
  if (!/^\d{1,9}$/.test(value)) throw new InvalidArgumentError(`${what} must be a non-negative integer.`);
  return Number(value);
};

const poolPath = (name: string, tail = '') => `/v1/pools/${encodeURIComponent(name)}${tail}`;

function poolFields(p: Row): string {
  return fields([
    ['name', p.name],
    ['standby', p.standby],
    ['min ready', p.minReady],
    ['max size', p.maxSize],
    ['ready', p.counts.ready],
    ['starting', p.counts.starting],
    ['claimed', p.counts.claimed],
    ['server type', p.spec.serverType],
    ['location', p.spec.location],
    ['image', p.spec.image],
    ...(p.schedules as Row[]).map((s, i): [string, string] => [`schedule ${i + 1}`, `${s.cron} (${s.timezone}) → ${s.minReady}`]),
    ['created', p.createdAt],
  ]);
}

function poolsCommand(program: Command): void {
  const pools = program.command('pools').description('pools of standby agents, and claims');

  pools
    .command('list')
    .description('every pool with its counts')
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ items: Row[] }>('GET', '/v1/pools');
      ctx.print(res, () =>
        table(
          ['NAME', 'STANDBY', 'MIN READY', 'MAX', 'READY', 'STARTING', 'CLAIMED', 'SCHEDULES'],
          res.body.items.map((p) => [p.name, p.standby, p.minReady, p.maxSize, p.counts.ready, p.counts.starting, p.counts.claimed, p.schedules.length]),
        ),
      );
    });

  pools
    .command('show <name>')
    .description('a pool with its counts: ready, starting, claimed')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('GET', poolPath(name));
      ctx.print(res, () => poolFields(res.body));
    });

  const specOptions = (c: Command) =>
    c
      .option('--location <location>', 'Hetzner location of the standbys, e.g. fsn1')
      .option('--server-type <type>', 'Hetzner server type, e.g. cx22')
      .option('--image <image>', 'image name or snapshot id')
      .option('--ssh-key <key>', 'Hetzner SSH key name or id (repeatable)', collect)
      .option('--label <key=value>', 'a label of the standbys while they wait (repeatable)', collect)
      .option('--user-data <data>', 'the standbys’ own cloud-init; @file reads a file')
      .option('--max-size <n>', 'the most standbys at once', positiveInt('--max-size'))
      .option('--schedule <cron@zone=n>', 'from <cron> in <zone> on, keep n ready (repeatable), e.g. "0 8 * * 1-5@Europe/Berlin=5"', collect);
  type SpecOpts = { location?: string; serverType?: string; image?: string; sshKey?: string[]; label?: string[]; userData?: string; maxSize?: number; schedule?: string[] };
  const specOf = (opts: SpecOpts) => {
    const labels = labelsOf(opts.label);
    const userData = userDataOf(opts.userData);
    const spec = {
      ...(opts.location ? { location: opts.location } : {}),
      ...(opts.serverType ? { serverType: opts.serverType } : {}),
      ...(opts.image ? { image: opts.image } : {}),
      ...(opts.sshKey ? { sshKeys: opts.sshKey } : {}),
      ...(labels ? { labels } : {}),
      ...(userData !== undefined ? { userData } : {}),
    };
    const schedules = schedulesOf(opts.schedule);
    return {
      ...(Object.keys(spec).length ? { spec } : {}),
      ...(opts.maxSize !== undefined ? { maxSize: opts.maxSize } : {}),
      ...(schedules ? { schedules } : {}),
    };
  };

  specOptions(
    pools
      .command('create <name>')
      .description('create a pool; the pool policy provisions its standbys')
      .requiredOption('--min-ready <n>', 'standbys to keep ready', nonNegativeInt('--min-ready'))
      .addOption(new Option('--standby <mode>', 'how standbys wait').choices(['running', 'stopped', 'hibernated']).default('running')),
  ).action(async (name: string, opts: SpecOpts & { minReady: number; standby: string }, cmd: Command) => {
    const ctx = new Context(cmd);
    const res = await ctx.client.request<Row>('POST', '/v1/pools', { body: { name, minReady: opts.minReady, standby: opts.standby, ...specOf(opts) } });
    ctx.print(res, () => poolFields(res.body));
  });

  specOptions(
    pools
      .command('update <name>')
      .description('change what a pool keeps (a new spec applies to standbys made from now on)')
      .option('--min-ready <n>', 'standbys to keep ready', nonNegativeInt('--min-ready'))
      .addOption(new Option('--standby <mode>', 'how standbys wait').choices(['running', 'stopped', 'hibernated']))
      .option('--no-max-size', 'no limit on the standbys')
      .option('--no-schedules', 'remove every schedule'),
  ).action(async (name: string, opts: Omit<SpecOpts, 'maxSize'> & { minReady?: number; standby?: string; maxSize?: number | false; schedules?: false }, cmd: Command) => {
    const ctx = new Context(cmd);
    const { maxSize, schedules: noSchedules, ...rest } = opts;
    const body = {
      ...specOf(rest),
      ...(opts.minReady !== undefined ? { minReady: opts.minReady } : {}),
      ...(opts.standby ? { standby: opts.standby } : {}),
      ...(maxSize === false ? { maxSize: null } : typeof maxSize === 'number' ? { maxSize } : {}),
      ...(noSchedules === false ? { schedules: [] } : {}),
    };
    const res = await ctx.client.request<Row>('PATCH', poolPath(name), { body });
    ctx.print(res, () => poolFields(res.body));
  });

  pools
    .command('delete <name>')
    .description('delete a pool and destroy its standbys (claimed agents stay)')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('DELETE', poolPath(name));
      ctx.print(res, () => `pool ${name} deleted; ${res.body.destroying.length} standbys being destroyed`);
    });

  pools
    .command('claim <name>')
    .description('take a ready standby of the pool (or a new agent when none is ready)')
    .option('--name <agent-name>', 'the claimed agent’s new name')
    .option('--label <key=value>', 'a label of the claimed agent and its server (repeatable)', collect)
    .option('--lease <seconds>', 'how long you hold the agent', positiveInt('--lease'))
    .option('--wait', 'follow the claim until the agent is handed over')
    .action(async (name: string, opts: { name?: string; label?: string[]; lease?: number; wait?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const labels = labelsOf(opts.label);
      const res = await ctx.client.request<Row & { operation: OperationBody['operation'] }>('POST', poolPath(name, '/claim'), {
        body: { ...(opts.name ? { name: opts.name } : {}), ...(labels ? { labels } : {}), ...(opts.lease ? { leaseSeconds: opts.lease } : {}) },
      });
      await ctx.started(res, opts.wait === true, () => `agent ${res.body.agent.id} ${res.body.agent.name} (from ${res.body.from})\n${accepted('claim', res.body)}`);
    });
}

function fleetCommand(program: Command): void {
  const fleet = program.command('fleet').description('the fleet as a whole');

  fleet
    .command('cost')
    .description('what the fleet costs per month, by agent status, and what hibernation saves')
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ currency: string; monthly: Row; policies?: Row }>('GET', '/v1/fleet/cost');
      const { currency, monthly, policies } = res.body;
      ctx.print(res, () =>
        [
          table(
            ['STATUS', `MONTHLY (${currency})`],
            Object.entries((monthly.byStatus ?? {}) as Record<string, number>).filter(([, amount]) => amount > 0),
          ),
          '',
          fields([
            ['total', `${monthly.total} ${currency}`],
            ['hibernation saves', `${monthly.hibernationSaving} ${currency}`],
            ['hibernating paused would save', `${monthly.potentialSaving} ${currency}`],
            ...(policies
              ? ([
                  [`policies saved (${policies.month})`, `${policies.saved} ${currency}`],
                  ['policy actions', `stop ${policies.actions.stop}, hibernate ${policies.actions.hibernate}, destroy ${policies.actions.destroy}`],
                ] as Array<[string, string]>)
              : []),
          ]),
        ].join('\n'),
      );
    });
}

function reconcileCommand(program: Command): void {
  const reconcile = program.command('reconcile').description('drift, stuck instances and orphans');

  reconcile
    .command('run')
    .description('queue a reconcile pass now')
    .option('--wait', 'follow the pass until it is final')
    .action(async (opts: { wait?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ operation: OperationBody['operation'] }>('POST', '/v1/reconcile');
      await ctx.started(res, opts.wait === true, () => accepted('reconcile', res.body));
    });

  reconcile
    .command('show')
    .description('the latest report')
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<{ report: Row }>('GET', '/v1/reconcile');
      const r = res.body.report;
      ctx.print(res, () =>
        [
          fields([
            ['trigger', r.trigger],
            ['operation', r.operationId],
            ['started', r.startedAt],
            ['finished', r.finishedAt],
            ['duration', r.durationMs === undefined ? null : `${r.durationMs} ms`],
          ]),
          '',
          table(['FINDING', 'COUNT'], Object.entries((r.summary ?? {}) as Record<string, number>)),
          ...((r.errors as string[] | undefined)?.length ? ['', ...(r.errors as string[]).map((e) => `error: ${e}`)] : []),
        ].join('\n'),
      );
    });
}

function findingsCommand(program: Command): void {
  const findings = program.command('findings').description('ownership findings: destructive calls refused for lack of proof');

  findings
    .command('list')
    .description('list findings, newest first')
    .addOption(new Option('--status <status>', 'only open or only resolved ones').choices(['open', 'resolved']))
    .option('--kind <kinds>', 'only these resources (comma-separated: server, device, auth_key, image)')
    .option('--limit <n>', 'page size (1–100)', positiveInt('--limit'))
    .option('--cursor <cursor>', 'continue after a previous page')
    .option('--all', 'follow every page')
    .action(async (opts: { status?: string; kind?: string; limit?: number; cursor?: string; all?: boolean }, cmd: Command) => {
      const ctx = new Context(cmd);
      const params = { status: opts.status, kind: opts.kind, limit: opts.limit, cursor: opts.cursor };
      const res = await listPages(ctx, '/v1/findings', params, opts.all === true);
      ctx.print(res, () =>
        table(
          ['ID', 'STATUS', 'RESOURCE', 'ACTION', 'BY', 'AGENT', 'MISSING', 'CREATED'],
          res.body.items.map((f) => [
            f.id,
            f.status,
            `${f.resourceType} ${f.resourceId}${f.resourceName ? ` (${f.resourceName})` : ''}`,
            f.action,
            f.operation,
            f.agentId,
            (f.missing as string[]).join('; '),
            f.createdAt,
          ]),
        ),
      );
      if (res.body.nextCursor) ctx.note(`more: tailfleet findings list --cursor ${res.body.nextCursor}`);
    });

  findings
    .command('resolve <id>')
    .description('close an open finding with a note of what was done (needs an admin token)')
    .requiredOption('--note <text>', 'what was done about it')
    .action(async (id: string, opts: { note: string }, cmd: Command) => {
      const ctx = new Context(cmd);
      const res = await ctx.client.request<Row>('POST', `/v1/findings/${encodeURIComponent(id)}/resolve`, { body: { note: opts.note } });
      ctx.print(res, () => `finding ${res.body.id} resolved by ${res.body.resolvedBy}: ${res.body.resolution}`);
    });
}

function consoleCommand(program: Command): void {
  program
    .command('console')
    .description("print the address of the API's web console (sign in there with an API token)")
    .action((_opts: unknown, cmd: Command) => {
      const { url } = cmd.optsWithGlobals<GlobalOptions>();
      const base = url ?? process.env.TAILFLEET_URL ?? DEFAULT_URL;
      let address: URL;
      try {
        address = new URL('console', base.endsWith('/') ? base : `${base}/`);
      } catch {
        throw new CliError(`error: --url / TAILFLEET_URL is not a URL: ${base}`, 2);
      }
      process.stdout.write(`${address.toString()}\n`);
    });
}

export function buildProgram(): Command {
  const program = new Command('tailfleet')
    .description('Command line for a tailfleet API (agents, leases, operations, findings, tokens, webhooks, reconcile, fleet cost, the console).')
    .option('--url <url>', `API base URL (default: $TAILFLEET_URL or ${DEFAULT_URL})`)
    .option('--token <token>', 'API token (default: $TAILFLEET_TOKEN)')
    .option('--json', "print the API's JSON as it came")
    .option('--poll-interval <ms>', 'how often --wait asks for progress', positiveInt('--poll-interval'), 1000)
    .option('--timeout <seconds>', 'how long --wait follows an operation', positiveInt('--timeout'), 1800)
    .showHelpAfterError();
  agentsCommand(program);
  opsCommand(program);
  tokensCommand(program);
  webhooksCommand(program);
  reconcileCommand(program);
  fleetCommand(program);
  leasesCommand(program);
  poolsCommand(program);
  findingsCommand(program);
  consoleCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof ApiError || err instanceof CliError) {
      process.stderr.write(`${err.message}\n`);
      return err instanceof CliError ? err.exitCode : 1;
    }
    process.stderr.write(`error: ${(err as Error).message ?? String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
