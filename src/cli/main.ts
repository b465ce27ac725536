#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ApiError, CliError, TailfleetClient, type ApiResponse, type RequestOptions } from './client';
import { fields, table, type Cell } from './table';
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

  /** One request, its answer printed: `human` renders its body. */
  async show<T = Row>(method: string, path: string, human: (body: T) => string, options?: RequestOptions): Promise<void> {
    const res = await this.client.request<T>(method, path, options);
    this.print(res, () => human(res.body));
  }

  /** A request that starts an operation: followed to its end with `wait`, else printed with how to follow it. */
  async start(method: string, path: string, wait: boolean | undefined, human: (body: Row & { operation: Row }) => string, options?: RequestOptions): Promise<void> {
    const res = await this.client.request<Row & { operation: OperationBody['operation'] }>(method, path, options);
    await this.started(res, wait === true, () => human(res.body));
  }

  /** GET `path`: its items as a table of `headers`, a row each. */
  showItems(path: string, headers: string[], row: (item: Row) => Cell[]): Promise<void> {
    return this.show<{ items: Row[] }>('GET', path, (body) => table(headers, body.items.map(row)));
  }

  /**
   * A paged listing as a table: one page, or with `all` every page (printed as one); `more` is the
   * command that continues after the page, named when there is a next one.
   */
  async showPages(path: string, params: Params, all: boolean, headers: string[], row: (item: Row) => Cell[], more?: string): Promise<void> {
    const res = await listPages(this, path, params, all);
    this.print(res, () => table(headers, res.body.items.map(row)));
    if (more && res.body.nextCursor) this.note(`more: tailfleet ${more} --cursor ${res.body.nextCursor}`);
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

/**
 * A command's action with its Context first: commander calls an action with the command's arguments,
 * its options and the command itself last.
 */
const act =
  <A extends unknown[]>(run: (ctx: Context, ...args: A) => Promise<void>) =>
  async (...args: unknown[]): Promise<void> =>
    run(new Context(args[args.length - 1] as Command), ...(args.slice(0, -1) as A));

type Row = Record<string, any>;

type Params = Record<string, string | number | string[] | undefined>;

const query = (params: Params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) for (const item of v) q.append(k, item);
    else if (v !== undefined) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
};

/** The paging options of a listing, after its filters. */
type PageOpts = { limit?: number; cursor?: string; all?: boolean };
const pageOptions = (c: Command) =>
  c
    .option('--limit <n>', 'page size (1–100)', positiveInt('--limit'))
    .option('--cursor <cursor>', 'continue after a previous page')
    .option('--all', 'follow every page');

/** Lists a paged collection: one page, or with `all` every page (printed as one). */
async function listPages(ctx: Context, path: string, params: Params, all: boolean) {
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

/** The header that makes a request safe to repeat, when a key is given. */
const idempotency = (key: string | undefined): Record<string, string> => (key ? { 'idempotency-key': key } : {});

const accepted = (verb: string, body: { operation: Row }) =>
  `${verb}: operation ${body.operation.id} ${body.operation.status}`;


/** What a server is made from, as agents create and pools create/update take it. */
type ServerSpecOpts = { location?: string; serverType?: string; image?: string; sshKey?: string[]; label?: string[]; userData?: string };

/** The server spec options; `whose` names what they describe in the help (the agent's servers, a pool's standbys). */
function serverSpecOptions(c: Command, whose: { location: string; image: string; label: string; userData: string }): Command {
  return c
    .option('--location <location>', `${whose.location}, e.g. fsn1`)
    .option('--server-type <type>', 'Hetzner server type, e.g. cx22')
    .option('--image <image>', whose.image)
    .option('--ssh-key <key>', 'Hetzner SSH key name or id (repeatable)', collect)
    .option('--label <key=value>', whose.label, collect)
    .option('--user-data <data>', whose.userData);
}

/** The given server spec options as the API's fields (sshKeys, labels, userData read from @file). */
function serverSpecOf(opts: ServerSpecOpts) {
  const labels = labelsOf(opts.label);
  const userData = userDataOf(opts.userData);
  return {
    ...(opts.location ? { location: opts.location } : {}),
    ...(opts.serverType ? { serverType: opts.serverType } : {}),
    ...(opts.image ? { image: opts.image } : {}),
    ...(opts.sshKey ? { sshKeys: opts.sshKey } : {}),
    ...(labels ? { labels } : {}),
    ...(userData !== undefined ? { userData } : {}),
  };
}

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

function agentsCommands(agents: Command): void {
  pageOptions(
    agents
      .command('list')
      .description('list agents, newest first')
      .option('--status <statuses>', 'only these statuses (comma-separated)')
      .option('--name <name>', 'only the agents with this name')
      .option('--label <key=value>', 'only agents with this label (repeatable: all must match)', collect),
  ).action(
    act((ctx, opts: PageOpts & { status?: string; name?: string; label?: string[] }) =>
      ctx.showPages(
        '/v1/agents',
        { status: opts.status, name: opts.name, label: opts.label, limit: opts.limit, cursor: opts.cursor },
        opts.all === true,
        ['ID', 'NAME', 'STATUS', 'INSTANCE', 'SERVER IP', 'TAILNET IP', 'CREATED'],
        (a) => [a.id, a.name, a.status, a.instance?.status, a.instance?.serverIp, a.instance?.tailscaleIp, a.createdAt],
        'agents list',
      ),
    ),
  );

  agents
    .command('get <agent>')
    .description('an agent (id or name) with its instance and running operation')
    .action(act(async (ctx, ref: string) =>
      ctx.show('GET', await agentPath(ctx, ref), ({ agent, instance, operation }) =>
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
      ),
    ));

  agents
    .command('extend <agent>')
    .description("move the agent's expiry (id or name): --ttl from now, or --expires-at")
    .option('--ttl <duration>', 'expire this long from now, e.g. 2h', durationOf('--ttl'))
    .option('--expires-at <time>', 'expire at this ISO 8601 time')
    .action(act(async (ctx, ref: string, opts: { ttl?: number; expiresAt?: string }) => {
      if ((opts.ttl === undefined) === (opts.expiresAt === undefined)) throw new CliError('error: give --ttl or --expires-at (one of them)', 2);
      const body = opts.ttl !== undefined ? { ttlSeconds: opts.ttl } : { expiresAt: opts.expiresAt };
      await ctx.show('POST', await agentPath(ctx, ref, '/extend'), (agent) => `${agent.name} expires at ${agent.expiresAt}`, { body });
    }));

  serverSpecOptions(agents.command('create <name>').description('create an agent and provision its server'), {
    location: 'Hetzner location',
    image: 'image name or snapshot id, e.g. ubuntu-24.04',
    label: 'a label of the agent and its servers (repeatable)',
    userData: 'the agent’s own cloud-init user data (#cloud-config, #! script, MIME, …); @file reads a file',
  })
    .option('--idle <steps>', 'idle ladder: comma-separated action@duration, e.g. stop@30m,hibernate@1d,destroy@30d', ladderOf)
    .option('--ttl <duration>', 'expire (destroy) the agent this long from now, e.g. 8h', durationOf('--ttl'))
    .option('--expires-at <time>', 'expire (destroy) the agent at this ISO 8601 time')
    .option('--no-reporter', 'install no activity reporter on the machine')
    .option('--idempotency-key <key>', 'makes the request safe to repeat')
    .option('--wait', 'follow the provision until it is final')
    .action(
      act(async (ctx, name: string, opts: ServerSpecOpts & { idle?: Array<{ afterSeconds: number; action: string }>; ttl?: number; expiresAt?: string; reporter?: boolean; idempotencyKey?: string; wait?: boolean }) => {
        const options = {
          body: {
            name,
            ...serverSpecOf(opts),
            ...(opts.idle ? { idle: opts.idle } : {}),
            ...(opts.ttl !== undefined ? { ttlSeconds: opts.ttl } : {}),
            ...(opts.expiresAt ? { expiresAt: opts.expiresAt } : {}),
            ...(opts.reporter === false ? { reporter: false } : {}),
          },
          headers: idempotency(opts.idempotencyKey),
        };
        await ctx.start('POST', '/v1/agents', opts.wait, (body) => `agent ${body.agent.id} ${body.agent.name}\n${accepted('provision', body)}`, options);
      }),
    );

  // One verb per command an operation descriptor declares (src/operations/types), then reprovision
  // (a fresh provision of an agent in error): each starts an operation on the agent.
  const operationVerbs = [
    ...AGENT_COMMAND_TYPES.map((verb) => ({ verb, description: `${commandOf(verb).cli} (the agent by id or name)`, operation: verb, follows: 'operation' })),
    { verb: 'reprovision', description: 'give an agent in error (id or name) a fresh instance with the same spec', operation: 'provision', follows: 'provision' },
  ];
  for (const { verb, description, operation, follows } of operationVerbs) {
    agents
      .command(`${verb} <agent>`)
      .description(description)
      .option('--idempotency-key <key>', 'makes the request safe to repeat')
      .option('--wait', `follow the ${follows} until it is final`)
      .action(
        act(async (ctx, ref: string, opts: { idempotencyKey?: string; wait?: boolean }) => {
          const headers = idempotency(opts.idempotencyKey);
          await ctx.start('POST', await agentPath(ctx, ref, `/${verb}`), opts.wait, (body) => accepted(operation, body), { headers });
        }),
      );
  }
}

function leasesCommands(leases: Command): void {
  const leaseRow = (l: Row) => [l.id, l.holder, l.expiresAt, l.live ? 'live' : l.releasedAt ? 'released' : 'expired'];

  leases
    .command('take <agent>')
    .description('take a lease on an agent (id or name)')
    .requiredOption('--holder <holder>', 'who holds it (a CI job, a user)')
    .requiredOption('--ttl <duration>', 'how long it lives unless renewed or released, e.g. 2h', durationOf('--ttl'))
    .action(act(async (ctx, ref: string, opts: { holder: string; ttl: number }) => {
      const body = { holder: opts.holder, ttlSeconds: opts.ttl };
      await ctx.show('POST', await agentPath(ctx, ref, '/leases'), (l) => fields([['id', l.id], ['holder', l.holder], ['expires', l.expiresAt]]), { body });
    }));

  leases
    .command('list <agent>')
    .description("an agent's live leases")
    .action(act(async (ctx, ref: string) => ctx.showItems(await agentPath(ctx, ref, '/leases'), ['ID', 'HOLDER', 'EXPIRES', 'STATE'], leaseRow)));

  leases
    .command('renew <agent> <lease>')
    .description('renew a live lease: it lives --ttl from now')
    .requiredOption('--ttl <duration>', 'e.g. 2h', durationOf('--ttl'))
    .action(act(async (ctx, ref: string, lease: string, opts: { ttl: number }) => {
      const path = await agentPath(ctx, ref, `/leases/${encodeURIComponent(lease)}/renew`);
      await ctx.show('POST', path, (l) => `lease ${l.id} expires at ${l.expiresAt}`, { body: { ttlSeconds: opts.ttl } });
    }));

  leases
    .command('release <agent> <lease>')
    .description('release a lease; idle time counts from now')
    .action(act(async (ctx, ref: string, lease: string) => ctx.show('DELETE', await agentPath(ctx, ref, `/leases/${encodeURIComponent(lease)}`), (l) => `released ${l.id}`)));
}

function opsCommands(ops: Command): void {
  ops
    .command('get <id>')
    .description('state, progress and error of an operation')
    .action(act((ctx, id: string) => ctx.show('GET', `/v1/operations/${encodeURIComponent(id)}`, (body) => operationFields(body.operation, body.job))));

  ops
    .command('cancel <id>')
    .description('cancel an operation that is still queued')
    .action(act((ctx, id: string) => ctx.show('POST', `/v1/operations/${encodeURIComponent(id)}/cancel`, ({ operation: op }) => `operation ${op.id} ${op.status}`)));

  ops
    .command('wait <id>')
    .description('follow an operation until it is final; fails when it does')
    .action(act((ctx, id: string) => ctx.follow(id)));

  pageOptions(
    ops
      .command('list')
      .description('list operations, newest first')
      .option('--status <statuses>', 'only these statuses (comma-separated)')
      .option('--type <types>', 'only these types (comma-separated)')
      .option('--agent <agent>', 'only operations on this agent (id or name)')
      .option('--since <time>', 'only operations requested at or after this ISO 8601 time'),
  ).action(
    act(async (ctx, opts: PageOpts & { status?: string; type?: string; agent?: string; since?: string }) => {
      const agentId = opts.agent === undefined ? undefined : await agentIdOf(ctx, opts.agent);
      const params = { status: opts.status, type: opts.type, agentId, since: opts.since, limit: opts.limit, cursor: opts.cursor };
      const headers = ['ID', 'TYPE', 'STATUS', 'PROGRESS', 'STEP', 'AGENT', 'REQUESTED'];
      await ctx.showPages('/v1/operations', params, opts.all === true, headers, (o) => [o.id, o.type, o.status, `${o.progress}%`, o.currentStep, o.agentId, o.requestedAt], 'ops list');
    }),
  );
}

function tokensCommands(tokens: Command): void {
  tokens
    .command('create <name>')
    .description('create a token; its secret is shown only now')
    .addOption(new Option('--scope <scope>', 'what the token may do').choices(['read', 'operate', 'admin']).makeOptionMandatory())
    .option('--expires-at <time>', 'ISO 8601 time after which the token stops working')
    .action(act(async (ctx, name: string, opts: { scope: string; expiresAt?: string }) => {
      const body = { name, scope: opts.scope, ...(opts.expiresAt ? { expiresAt: opts.expiresAt } : {}) };
      const tokenFields = (t: Row) => fields([['id', t.id], ['name', t.name], ['scope', t.scope], ['expires', t.expiresAt ?? 'never'], ['token', t.token]]);
      await ctx.show('POST', '/v1/tokens', tokenFields, { body });
      ctx.note('Store the token now: it is not shown again.');
    }));

  tokens
    .command('list')
    .description('list tokens (never their secrets)')
    .option('--include-revoked', 'also list revoked tokens')
    .action(act((ctx, opts: { includeRevoked?: boolean }) =>
      ctx.showItems(
        `/v1/tokens${opts.includeRevoked ? '?includeRevoked=true' : ''}`,
        ['ID', 'NAME', 'SCOPE', 'PREFIX', 'CREATED', 'EXPIRES', 'LAST USED', 'REVOKED'],
        (t) => [t.id, t.name, t.scope, t.tokenPrefix, t.createdAt, t.expiresAt, t.lastUsedAt, t.revokedAt],
      ),
    ));

  tokens
    .command('revoke <id>')
    .description('revoke a token; its next request is refused')
    .action(act((ctx, id: string) => ctx.show('DELETE', `/v1/tokens/${encodeURIComponent(id)}`, () => `revoked ${id}`)));
}

const WEBHOOK_EVENTS = ['operation.succeeded', 'operation.failed', 'operation.cancelled', 'agent.status_changed', 'agent.expiring', 'finding.resolved'];

function webhooksCommands(webhooks: Command): void {
  webhooks
    .command('create <url>')
    .description('subscribe a URL to events; its signing secret is shown only now')
    .option('--events <types>', `comma-separated event types (default: all of ${WEBHOOK_EVENTS.join(', ')})`)
    .action(act(async (ctx, url: string, opts: { events?: string }) => {
      const events = opts.events?.split(',').map((e) => e.trim()).filter(Boolean);
      const webhookFields = (w: Row) => fields([['id', w.id], ['url', w.url], ['events', (w.events as string[]).join(', ')], ['secret', w.secret]]);
      await ctx.show('POST', '/v1/webhooks', webhookFields, { body: { url, ...(events ? { events } : {}) } });
      ctx.note('Store the secret now: it is not shown again.');
    }));

  webhooks
    .command('list')
    .description('list subscriptions (never their secrets)')
    .action(act((ctx) => ctx.showItems('/v1/webhooks', ['ID', 'URL', 'EVENTS', 'CREATED BY', 'CREATED'], (w) => [w.id, w.url, (w.events as string[]).join(','), w.createdBy, w.createdAt])));

  webhooks
    .command('delete <id>')
    .description('delete a subscription and its deliveries')
    .action(act((ctx, id: string) => ctx.show('DELETE', `/v1/webhooks/${encodeURIComponent(id)}`, () => `deleted ${id}`)));

  webhooks
    .command('deliveries <id>')
    .description("a subscription's deliveries, newest first, with their last attempt")
    .option('--limit <n>', 'deliveries per page (≤ 100)', positiveInt('--limit'))
    .option('--all', 'every page')
    .action(act((ctx, id: string, opts: { limit?: number; all?: boolean }) => {
      const headers = ['ID', 'TYPE', 'STATUS', 'ATTEMPTS', 'LAST ANSWER', 'LAST ERROR', 'OCCURRED'];
      return ctx.showPages(`/v1/webhooks/${encodeURIComponent(id)}/deliveries`, { limit: opts.limit }, opts.all === true, headers, (d) => {
        const last = (d.attemptLog as Row[]).at(-1);
        return [d.id, d.type, d.status, d.attempts, last?.status, last?.error, d.occurredAt];
      });
    }));
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

function poolsCommands(pools: Command): void {
  pools
    .command('list')
    .description('every pool with its counts')
    .action(act((ctx) =>
      ctx.showItems(
        '/v1/pools',
        ['NAME', 'STANDBY', 'MIN READY', 'MAX', 'READY', 'STARTING', 'CLAIMED', 'SCHEDULES'],
        (p) => [p.name, p.standby, p.minReady, p.maxSize, p.counts.ready, p.counts.starting, p.counts.claimed, p.schedules.length],
      ),
    ));

  pools
    .command('show <name>')
    .description('a pool with its counts: ready, starting, claimed')
    .action(act((ctx, name: string) => ctx.show('GET', poolPath(name), poolFields)));

  const specOptions = (c: Command) =>
    serverSpecOptions(c, {
      location: 'Hetzner location of the standbys',
      image: 'image name or snapshot id',
      label: 'a label of the standbys while they wait (repeatable)',
      userData: 'the standbys’ own cloud-init; @file reads a file',
    })
      .option('--max-size <n>', 'the most standbys at once', positiveInt('--max-size'))
      .option('--schedule <cron@zone=n>', 'from <cron> in <zone> on, keep n ready (repeatable), e.g. "0 8 * * 1-5@Europe/Berlin=5"', collect);
  type SpecOpts = ServerSpecOpts & { maxSize?: number; schedule?: string[] };
  const specOf = (opts: SpecOpts) => {
    const spec = serverSpecOf(opts);
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
  ).action(
    act(async (ctx, name: string, opts: SpecOpts & { minReady: number; standby: string }) => {
      await ctx.show('POST', '/v1/pools', poolFields, { body: { name, minReady: opts.minReady, standby: opts.standby, ...specOf(opts) } });
    }),
  );

  specOptions(
    pools
      .command('update <name>')
      .description('change what a pool keeps (a new spec applies to standbys made from now on)')
      .option('--min-ready <n>', 'standbys to keep ready', nonNegativeInt('--min-ready'))
      .addOption(new Option('--standby <mode>', 'how standbys wait').choices(['running', 'stopped', 'hibernated']))
      .option('--no-max-size', 'no limit on the standbys')
      .option('--no-schedules', 'remove every schedule'),
  ).action(
    act(async (ctx, name: string, opts: Omit<SpecOpts, 'maxSize'> & { minReady?: number; standby?: string; maxSize?: number | false; schedules?: false }) => {
      const { maxSize, schedules: noSchedules, ...rest } = opts;
      const body = {
        ...specOf(rest),
        ...(opts.minReady !== undefined ? { minReady: opts.minReady } : {}),
        ...(opts.standby ? { standby: opts.standby } : {}),
        ...(maxSize === false ? { maxSize: null } : typeof maxSize === 'number' ? { maxSize } : {}),
        ...(noSchedules === false ? { schedules: [] } : {}),
      };
      await ctx.show('PATCH', poolPath(name), poolFields, { body });
    }),
  );

  pools
    .command('delete <name>')
    .description('delete a pool and destroy its standbys (claimed agents stay)')
    .action(act((ctx, name: string) => ctx.show('DELETE', poolPath(name), (body) => `pool ${name} deleted; ${body.destroying.length} standbys being destroyed`)));

  pools
    .command('claim <name>')
    .description('take a ready standby of the pool (or a new agent when none is ready)')
    .option('--name <agent-name>', 'the claimed agent’s new name')
    .option('--label <key=value>', 'a label of the claimed agent and its server (repeatable)', collect)
    .option('--lease <seconds>', 'how long you hold the agent', positiveInt('--lease'))
    .option('--wait', 'follow the claim until the agent is handed over')
    .action(act(async (ctx, name: string, opts: { name?: string; label?: string[]; lease?: number; wait?: boolean }) => {
      const labels = labelsOf(opts.label);
      const body = { ...(opts.name ? { name: opts.name } : {}), ...(labels ? { labels } : {}), ...(opts.lease ? { leaseSeconds: opts.lease } : {}) };
      await ctx.start('POST', poolPath(name, '/claim'), opts.wait, (claim) => `agent ${claim.agent.id} ${claim.agent.name} (from ${claim.from})\n${accepted('claim', claim)}`, { body });
    }));
}

function fleetCommands(fleet: Command): void {
  fleet
    .command('cost')
    .description('what the fleet costs per month, by agent status, and what hibernation saves')
    .action(act((ctx) =>
      ctx.show<{ currency: string; monthly: Row; policies?: Row }>('GET', '/v1/fleet/cost', ({ currency, monthly, policies }) =>
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
      ),
    ));
}

function reconcileCommands(reconcile: Command): void {
  reconcile
    .command('run')
    .description('queue a reconcile pass now')
    .option('--wait', 'follow the pass until it is final')
    .action(act((ctx, opts: { wait?: boolean }) => ctx.start('POST', '/v1/reconcile', opts.wait, (body) => accepted('reconcile', body))));

  reconcile
    .command('show')
    .description('the latest report')
    .action(act((ctx) =>
      ctx.show<{ report: Row }>('GET', '/v1/reconcile', ({ report: r }) =>
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
      ),
    ));
}

function findingsCommands(findings: Command): void {
  pageOptions(
    findings
      .command('list')
      .description('list findings, newest first')
      .addOption(new Option('--status <status>', 'only open or only resolved ones').choices(['open', 'resolved']))
      .option('--kind <kinds>', 'only these resources (comma-separated: server, device, auth_key, image)'),
  ).action(
    act((ctx, opts: PageOpts & { status?: string; kind?: string }) =>
      ctx.showPages(
        '/v1/findings',
        { status: opts.status, kind: opts.kind, limit: opts.limit, cursor: opts.cursor },
        opts.all === true,
        ['ID', 'STATUS', 'RESOURCE', 'ACTION', 'BY', 'AGENT', 'MISSING', 'CREATED'],
        (f) => [
          f.id,
          f.status,
          `${f.resourceType} ${f.resourceId}${f.resourceName ? ` (${f.resourceName})` : ''}`,
          f.action,
          f.operation,
          f.agentId,
          (f.missing as string[]).join('; '),
          f.createdAt,
        ],
        'findings list',
      ),
    ),
  );

  findings
    .command('resolve <id>')
    .description('close an open finding with a note of what was done (needs an admin token)')
    .requiredOption('--note <text>', 'what was done about it')
    .action(act((ctx, id: string, opts: { note: string }) =>
      ctx.show('POST', `/v1/findings/${encodeURIComponent(id)}/resolve`, (f) => `finding ${f.id} resolved by ${f.resolvedBy}: ${f.resolution}`, { body: { note: opts.note } }),
    ));
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

/** The command groups, in the order help lists them: name, description, and what declares their commands. */
const COMMAND_GROUPS: Array<[string, string, (group: Command) => void]> = [
  ['agents', 'agent machines', agentsCommands],
  ['ops', 'operations (accepted commands and their progress)', opsCommands],
  ['tokens', 'named API tokens (needs an admin token)', tokensCommands],
  ['webhooks', 'signed webhooks (needs an admin token)', webhooksCommands],
  ['reconcile', 'drift, stuck instances and orphans', reconcileCommands],
  ['fleet', 'the fleet as a whole', fleetCommands],
  ['leases', 'leases: while one is live its agent is never stopped for idleness, expired or claimed', leasesCommands],
  ['pools', 'pools of standby agents, and claims', poolsCommands],
  ['findings', 'ownership findings: destructive calls refused for lack of proof', findingsCommands],
];

export function buildProgram(): Command {
  const program = new Command('tailfleet')
    .description('Command line for a tailfleet API (agents, leases, operations, findings, tokens, webhooks, reconcile, fleet cost, the console).')
    .option('--url <url>', `API base URL (default: $TAILFLEET_URL or ${DEFAULT_URL})`)
    .option('--token <token>', 'API token (default: $TAILFLEET_TOKEN)')
    .option('--json', "print the API's JSON as it came")
    .option('--poll-interval <ms>', 'how often --wait asks for progress', positiveInt('--poll-interval'), 1000)
    .option('--timeout <seconds>', 'how long --wait follows an operation', positiveInt('--timeout'), 1800)
    .showHelpAfterError();
  for (const [name, description, declare] of COMMAND_GROUPS) declare(program.command(name).description(description));
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
