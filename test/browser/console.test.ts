import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { SESSION_COOKIE, SessionSealer } from '../../src/console/session';
import { OwnershipFindingRepository } from '../../src/db/ownership-finding.repository';
import type { Tailfleet } from '../../src/server';
import { findChromium } from '../../scripts/find-chromium';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';

// The operator's console as a person uses it, in headless Chromium against the whole stack
// (composition root, workers, PostgreSQL, Redis, the cloud simulator over HTTP).

const ARTIFACTS = join(__dirname, '..', '..', 'test-artifacts');
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('console: the operator’s pages in a real browser', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let browser: Browser;
  const tokens: Record<'read' | 'operate', string> = { read: '', operate: '' };
  const agents: Record<'blue' | 'green', string> = { blue: '', green: '' };
  let findingId: string;

  before(async function () {
    this.timeout(10 * 60_000);
    const executablePath = findChromium();
    suite = await createSuite('browser_console');
    tf = await suite.launch();
    api = apiClient(tf.url!, suite.apiToken);
    for (const scope of ['read', 'operate'] as const) {
      const res = await api.post('/v1/tokens', { name: `console-${scope}`, scope });
      expect(res.status).to.equal(201);
      tokens[scope] = res.body.token;
    }
    for (const team of ['blue', 'green'] as const) {
      const res = await api.post('/v1/agents', { name: `console-${team}`, labels: { team } });
      expect(res.status).to.equal(201);
      agents[team] = res.body.agent.id;
    }
    for (const id of Object.values(agents)) {
      await waitFor('the agents to be provisioned', async () => (await api.get(`/v1/agents/${id}`)).body.agent.status === 'active');
    }
    findingId = (
      await new OwnershipFindingRepository({ dataSource: suite.db.dataSource }).recordRefusal(
        { resourceType: 'server', resourceId: '31337', resourceName: 'stray-box', action: 'delete', operation: 'reconcile', matched: ['managed-by label'], missing: ['this fleet'] },
        'refused: the server does not carry this fleet',
      )
    ).id;
    browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_FLAGS, timeout: 20_000 });
    mkdirSync(ARTIFACTS, { recursive: true });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await suite?.close();
  });

  /** A fresh browser profile; every console error and CSP violation is collected. */
  async function open(opts: { bypassCSP?: boolean } = {}): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: opts.bypassCSP ?? false });
    context.setDefaultTimeout(10_000);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(msg.text());
    });
    page.on('pageerror', (err) => problems.push(err.message));
    return { context, page, problems };
  }

  async function signIn(page: Page, token: string): Promise<void> {
    await page.goto(`${tf.url}/console`);
    expect(new URL(page.url()).pathname).to.equal('/console/sign-in');
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${tf.url}/console`);
  }

  it('signs in with a token for an HttpOnly, SameSite=Strict session cookie, and serves every page under a strict CSP', async () => {
    const { context, page, problems } = await open();
    try {
      const signInPage = await page.goto(`${tf.url}/console/sign-in`);
      const csp = signInPage!.headers()['content-security-policy']!;
      expect(csp).to.contain("script-src 'self'").and.to.contain("default-src 'none'").and.not.to.contain('unsafe-inline');
      await page.getByLabel('API token').fill('tf_not-a-real-token-at-all');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect(await page.getByRole('alert').textContent()).to.contain('not valid');

      // The refused sign-in was a 401 page, as it should be; from here on nothing may fail.
      problems.length = 0;
      await signIn(page, suite.apiToken);
      const [cookie] = await context.cookies();
      expect(cookie).to.include({ name: SESSION_COOKIE, httpOnly: true, sameSite: 'Strict', path: '/console' });
      expect(cookie!.value).not.to.contain(suite.apiToken);
      expect(cookie!.expires).to.be.greaterThan(Date.now() / 1000);

      await page.screenshot({ path: join(ARTIFACTS, 'console-fleet.png'), fullPage: true });
      expect(await page.getByRole('heading', { name: 'Fleet' }).isVisible()).to.equal(true);
      expect(await page.locator('#chart-hourly').evaluate((c: HTMLCanvasElement) => c.width > 0)).to.equal(true);
      for (const [path, shot] of [
        ['/console/agents', 'console-agents'],
        ['/console/pools', 'console-pools-empty'],
        [`/console/agents/${agents.green}`, 'console-agent'],
        ['/console/operations', 'console-operations'],
        ['/console/findings', 'console-findings'],
        ['/console/tokens', 'console-tokens'],
        ['/console/webhooks', 'console-webhooks'],
        [`/console/agents/${agents.green}/destroy`, 'console-confirm-destroy'],
      ] as const) {
        const res = await page.goto(`${tf.url}${path}`);
        expect(res!.status(), path).to.equal(200);
        await page.screenshot({ path: join(ARTIFACTS, `${shot}.png`), fullPage: true });
      }
      expect(problems, 'console errors or CSP violations').to.deep.equal([]);
    } finally {
      await context.close();
    }
  });

  it('finds an agent by label, stops it from its page and shows the new status without a reload', async () => {
    const { context, page, problems } = await open();
    try {
      await signIn(page, tokens.operate);
      await page.getByRole('link', { name: 'Agents' }).click();
      await page.getByLabel('Label (key=value)').fill('team=blue');
      await page.getByRole('button', { name: 'Filter' }).click();
      const rows = page.locator('tbody tr');
      await waitFor('the filtered list', async () => (await rows.count()) === 1);
      await page.getByRole('link', { name: 'console-blue' }).click();
      await page.waitForURL(`${tf.url}/console/agents/${agents.blue}`);
      const status = page.locator(`[data-agent-status="${agents.blue}"]`).first();
      expect(await status.textContent()).to.equal('active');
      await page.waitForFunction(() => document.documentElement.dataset.stream === 'open');
      // Anything a reload would wipe out.
      await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));

      await page.getByRole('button', { name: 'Stop' }).click();
      await page.waitForFunction(() => /stop: operation/.test(document.getElementById('form-result')?.textContent ?? ''));
      await page.waitForFunction((id) => document.querySelector(`[data-agent-status="${id}"]`)?.textContent === 'paused', agents.blue, { timeout: 20_000 });
      expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).to.equal(42);
      // The timeline gained the stop's events as they were written, with who asked.
      await page.waitForFunction(() => /active → paused/.test(document.getElementById('timeline')?.textContent ?? ''));
      expect(await page.locator('#timeline').textContent()).to.contain('token console-operate');
      await page.screenshot({ path: join(ARTIFACTS, 'console-agent-stopped.png'), fullPage: true });
      expect((await api.get(`/v1/agents/${agents.blue}`)).body.agent.status).to.equal('paused');
      const ops = (await api.get(`/v1/operations?agentId=${agents.blue}&type=stop`)).body.items;
      expect(ops[0].requestedBy).to.match(/^token:console-operate#/);

      // Destroy asks for the agent's name first.
      await page.goto(`${tf.url}/console/agents/${agents.green}/destroy`);
      expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('Destroy console-green?');
      await page.getByLabel('Type console-green to confirm').fill('console-blue');
      await page.getByRole('button', { name: 'Destroy console-green' }).click();
      expect(await page.getByRole('alert').textContent()).to.contain('Type the agent’s name exactly');
      expect((await api.get(`/v1/agents/${agents.green}`)).body.agent.status).to.equal('active');
      expect(problems).to.deep.equal([]);
    } finally {
      await context.close();
    }
  });

  it('offers a read token no enabled button that changes anything', async () => {
    const { context, page } = await open();
    try {
      await signIn(page, tokens.read);
      expect(await page.getByRole('link', { name: 'Tokens' }).count()).to.equal(0);
      for (const path of ['/console', '/console/agents', `/console/agents/${agents.green}`, '/console/operations', '/console/findings?status=all']) {
        await page.goto(`${tf.url}${path}`);
        const enabled = await page.evaluate(() =>
          [...document.querySelectorAll('form[method="post"] button, form[method="post"] input:not([type="hidden"]), a[role="button"]')]
            .filter((el) => !(el as HTMLButtonElement).disabled && (el as HTMLElement).dataset.session !== 'sign-out')
            .map((el) => el.outerHTML),
        );
        expect(enabled, path).to.deep.equal([]);
      }
      await page.goto(`${tf.url}/console/agents/${agents.green}`);
      await page.screenshot({ path: join(ARTIFACTS, 'console-agent-read-only.png'), fullPage: true });
      // The server refuses as well: a forged post with the session's own CSRF token gets the API's 403.
      const answer = await page.evaluate(async (id) => {
        const csrf = (document.querySelector('input[name="_csrf"]') as HTMLInputElement).value;
        const res = await fetch(`/console/agents/${id}/destroy`, { method: 'POST', body: new URLSearchParams({ _csrf: csrf, confirm: 'console-green' }) });
        return new URL(res.url).searchParams.get('error');
      }, agents.green);
      expect(answer).to.match(/scope read; this needs operate/);
      const tokensPage = await page.goto(`${tf.url}/console/tokens`);
      expect(tokensPage!.status()).to.equal(403);
    } finally {
      await context.close();
    }
  });

  it('sends an expired session back to sign-in, and refuses a form without its CSRF token', async () => {
    const { context, page } = await open();
    try {
      const sealer = new SessionSealer(suite.apiToken);
      const expired = sealer.seal({ ...sealer.create(suite.apiToken, 60_000), expiresAt: Date.now() - 1000 });
      await context.addCookies([{ name: SESSION_COOKIE, value: expired, url: `${tf.url}/console`, httpOnly: true, sameSite: 'Strict' }]);
      await page.goto(`${tf.url}/console/agents`);
      expect(new URL(page.url()).pathname).to.equal('/console/sign-in');
      expect(await page.getByRole('alert').textContent()).to.contain('Your session has ended');
      await page.screenshot({ path: join(ARTIFACTS, 'console-sign-in-expired.png'), fullPage: true });

      // Signed in again, it returns to the page that was asked for.
      await page.getByLabel('API token').fill(suite.apiToken);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(`${tf.url}/console/agents`);

      const status = await page.evaluate(async (id) => {
        const res = await fetch(`/console/findings/${id}/resolve`, { method: 'POST', body: new URLSearchParams({ note: 'no csrf' }) });
        return res.status;
      }, findingId);
      expect(status).to.equal(403);

      // Resolving from the findings page.
      await page.goto(`${tf.url}/console/findings`);
      await page.getByLabel('Note for server 31337').fill('deleted by hand: another team’s test box');
      await page.getByRole('button', { name: 'Resolve' }).click();
      expect(await page.getByRole('status').first().textContent()).to.contain('resolved');
      const finding = (await api.get('/v1/findings?status=resolved')).body.items.find((f: { id: string }) => f.id === findingId);
      expect(finding).to.include({ resolvedBy: 'bootstrap', resolution: 'deleted by hand: another team’s test box' });
    } finally {
      await context.close();
    }
  });

  it('shows each project’s request budget, the pools with their counts, and an agent’s readiness, last activity, expiry and live leases', async () => {
    // A pool whose policy keeps nothing (its minimum and its schedule's are 0): the counts stay as made.
    const pool = await api.post('/v1/pools', {
      name: 'console-pool',
      minReady: 0,
      standby: 'stopped',
      maxSize: 4,
      spec: { serverType: 'cx22', labels: { tier: 'warm' } },
      schedules: [{ cron: '0 8 * * 1-5', timezone: 'Europe/Berlin', minReady: 0 }],
    });
    expect(pool.status, JSON.stringify(pool.body)).to.equal(201);
    const lease = await api.post(`/v1/agents/${agents.blue}/leases`, { holder: 'nightly-build', ttlSeconds: 3600 });
    expect(lease.status, JSON.stringify(lease.body)).to.equal(201);
    const extended = await api.post(`/v1/agents/${agents.blue}/extend`, { ttlSeconds: 7200 });
    expect(extended.status, JSON.stringify(extended.body)).to.equal(200);

    const { context, page, problems } = await open();
    try {
      await signIn(page, tokens.read);
      // The fleet page's budget tile: each Hetzner project as the workers last saw it.
      const project = (await page.locator('[data-project="default"]').textContent())!;
      expect(project).to.match(/^default: \d+ \/ \d+ requests left \(.+\); \d+ servers$/);
      await page.getByRole('link', { name: 'Pools' }).click();
      await page.waitForURL(`${tf.url}/console/pools`);
      const row = page.locator('tr[data-pool="console-pool"]');
      expect(await row.getByRole('rowheader').textContent()).to.equal('console-pool');
      expect(await row.locator('[data-count="ready"]').textContent()).to.equal('0');
      expect(await row.locator('[data-count="claimed"]').textContent()).to.equal('0');
      expect(await row.textContent()).to.contain('0 8 * * 1-5').and.to.contain('Europe/Berlin').and.to.contain('cx22').and.to.contain('tier=warm');
      await page.screenshot({ path: join(ARTIFACTS, 'console-pools.png'), fullPage: true });

      await page.goto(`${tf.url}/console/agents/${agents.blue}`);
      const card = page.locator('article', { has: page.getByRole('heading', { name: 'Readiness and leases' }) });
      expect(await card.locator(`[data-leases="${agents.blue}"]`).textContent()).to.contain('nightly-build until');
      const text = (await card.textContent())!;
      expect(text).to.contain(new Date(extended.body.expiresAt).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
      // The activity the API reports for it: a live lease is activity until it ends (its time is
      // the moment of reading, so only the kind is compared).
      const activity = (await api.get(`/v1/agents/${agents.blue}`)).body.agent.lastActivity;
      expect(activity?.kind).to.equal('lease');
      expect(text).to.match(/Last activity\s*lease at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ/);
      expect(problems, 'console errors or CSP violations').to.deep.equal([]);
    } finally {
      await context.close();
      await api.call('DELETE', `/v1/agents/${agents.blue}/leases/${lease.body.id}`);
    }
  });

  it('has no serious or critical accessibility violations (axe-core) on any page', async () => {
    const { context, page } = await open({ bypassCSP: true });
    try {
      await signIn(page, suite.apiToken);
      const hook = await api.post('/v1/webhooks', { url: 'https://93.184.215.14/hooks/console', events: ['finding.resolved'] });
      expect(hook.status, JSON.stringify(hook.body)).to.equal(201);
      const pages = ['/console', '/console/agents', '/console/pools', `/console/agents/${agents.blue}`, `/console/agents/${agents.green}`, `/console/agents/${agents.green}/destroy`, '/console/operations', '/console/findings?status=all', '/console/tokens', '/console/webhooks', `/console/webhooks/${hook.body.id}`];
      const found: string[] = [];
      for (const path of [...pages, 'sign-in']) {
        if (path === 'sign-in') {
          await context.clearCookies();
          await page.goto(`${tf.url}/console/sign-in`);
        } else {
          await page.goto(`${tf.url}${path}`);
        }
        if (path.startsWith('/console/webhooks/')) await page.screenshot({ path: join(ARTIFACTS, 'console-webhook-deliveries.png'), fullPage: true });
        await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
        const violations = await page.evaluate(async () => {
          const axe = (window as unknown as { axe: { run: (ctx: Document, opts: unknown) => Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }> }> } }).axe;
          const result = await axe.run(document, { resultTypes: ['violations'] });
          return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
        });
        for (const v of violations) if (v.impact === 'serious' || v.impact === 'critical') found.push(`${path}: ${v.id} (${v.impact}) ${v.nodes.join(', ')}`);
      }
      expect(found).to.deep.equal([]);
    } finally {
      await context.close();
    }
  });
});
