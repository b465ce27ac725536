import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { QUEUE_NAMES } from '../../src/queues/queues';
import type { Tailfleet } from '../../src/server';
import { findChromium } from '../../scripts/find-chromium';
import { apiClient, createSuite, waitFor, type ApiClient, type Suite } from '../pipeline/stack';

// An operator's view of a failure: a stop job fails for good (the Hetzner token lacks permission),
// the operator logs in to Bull Board, finds the failed job, fixes the cause and presses Retry, and
// the job completes. Everything is real: Chromium, the composition root, Redis, PostgreSQL and the
// simulator over HTTP.

const ARTIFACTS = join(__dirname, '..', '..', 'test-artifacts');
const BOARD_USER = 'operator';
const BOARD_PASSWORD = 'board-password-for-tests';
// Playwright adds --headless (headless: true) and --no-sandbox itself and owns --user-data-dir
// (launchPersistentContext); they are listed so the command line is complete at a glance.
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHUTDOWN_ROUTE = '/hetzner/v1/servers/{id}/actions/shutdown';

describe('dashboard: Bull Board in a real browser', function () {
  this.timeout(30_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let context: BrowserContext;
  let page: Page;
  let userDataDir: string;

  before(async function () {
    // Only a machine without Chromium needs long here: the first run installs it.
    this.timeout(10 * 60_000);
    const executablePath = findChromium();
    suite = await createSuite('browser_dashboard');
    tf = await suite.launch({ env: { BULL_BOARD_USER: BOARD_USER, BULL_BOARD_PASSWORD: BOARD_PASSWORD } });
    api = apiClient(tf.url!, suite.apiToken);
    userDataDir = mkdtempSync(join(tmpdir(), 'tailfleet-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: CHROMIUM_FLAGS,
      httpCredentials: { username: BOARD_USER, password: BOARD_PASSWORD },
      viewport: { width: 1280, height: 800 },
      timeout: 20_000,
    });
    context.setDefaultTimeout(10_000);
    page = context.pages()[0] ?? (await context.newPage());
    mkdirSync(ARTIFACTS, { recursive: true });
  });

  after(async () => {
    await context?.close().catch(() => undefined);
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await suite?.close();
  });

  async function runningAgent(name: string): Promise<string> {
    const res = await api.post('/v1/agents', { name });
    expect(res.status).to.equal(201);
    const id = res.body.agent.id as string;
    await waitFor('the agent to be provisioned', async () => (await api.get(`/v1/agents/${id}`)).body.agent.status === 'active');
    return id;
  }

  /** Job actions are icon buttons named only by their tooltip, as the operator sees them. */
  async function jobActionButton(name: string): Promise<Locator> {
    const buttons = page.locator('ul[class*="jobActions"] button');
    const count = await buttons.count();
    for (let i = 0; i < count; i++) {
      await buttons.nth(i).hover();
      const tooltip = page.getByText(name, { exact: true });
      const shown = await tooltip.waitFor({ state: 'visible', timeout: 2_000 }).then(
        () => true,
        () => false,
      );
      if (shown) return buttons.nth(i);
    }
    throw new Error(`no job action button shows the tooltip "${name}" (${count} buttons)`);
  }

  /** The board refreshes on its own schedule: poll what it shows, with a deadline. */
  async function expectEventually(check: () => Promise<boolean>, what: string): Promise<void> {
    await waitFor(what, async () => (await check()) || undefined, { timeoutMs: 10_000, intervalMs: 100 });
  }

  it('refuses the board without the operator credentials', async () => {
    const res = await fetch(`${tf.url}/admin/queues`);
    expect(res.status).to.equal(401);
    expect(res.headers.get('www-authenticate')).to.match(/^Basic /);
    const wrong = await fetch(`${tf.url}/admin/queues`, {
      headers: { authorization: `Basic ${Buffer.from(`${BOARD_USER}:wrong`).toString('base64')}` },
    });
    expect(wrong.status).to.equal(401);
  });

  it('shows a failed stop job, and Retry runs it to completion once the cause is fixed', async () => {
    const agentId = await runningAgent('dash-1');

    // A permission error is permanent: the job fails on its first attempt and stays failed.
    suite.sim.control.setFaults([{ method: 'POST', route: SHUTDOWN_ROUTE, status: 403, code: 'forbidden', message: 'token lacks write permission' }]);
    const stop = await api.post(`/v1/agents/${agentId}/stop`);
    expect(stop.status).to.equal(202);
    const operationId = stop.body.operation.id as string;
    const jobId = stop.body.operation.queueJobId as string;
    await waitFor('the stop operation to fail', async () => (await api.get(`/v1/operations/${operationId}`)).body.operation.status === 'failed');
    // The operation is written failed before BullMQ moves the job, so the queue is waited for too.
    await waitFor('the stop job to fail in the queue', async () => (await tf.queues.stop.getJobState(jobId)) === 'failed');

    // Logged in through HTTP Basic, the overview lists every queue.
    const overview = await page.goto(`${tf.url}/admin/queues`);
    expect(overview?.status()).to.equal(200);
    // Every queue has its card in the overview (the sidebar lists them too, before the data loads).
    for (const name of QUEUE_NAMES) {
      await page.locator(`main a[title="${name}"]`).waitFor({ state: 'visible' });
    }
    const stopCard = page.locator('main li', { has: page.locator('a[title="stop"]') });
    await expectEventually(async () => /FAILED\s*1\b/i.test(await stopCard.innerText()), 'the stop card to count one failed job');
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-queues.png'), fullPage: true });

    // Queue → failed tab → the job, with the cloud's refusal as its error.
    await page.locator('a[title="stop"]').first().click();
    await page.locator('a[href$="/queue/stop?status=failed"]').first().click();
    await page.locator(`a[href*="/queue/stop/${jobId}"]`).first().click();
    await page.waitForURL(new RegExp(`/queue/stop/${jobId}`));
    await page.getByText(/403 forbidden/).first().waitFor({ state: 'visible' });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-failed-job.png'), fullPage: true });

    // The operator fixes the token, then retries the job from the board.
    suite.sim.control.clearFaults();
    await (await jobActionButton('Retry')).click();
    await page.getByRole('button', { name: 'Confirm' }).click();

    await waitFor(
      'the retried job to complete',
      async () => (await (await tf.queues.stop.getJob(jobId))?.getState()) === 'completed',
      { timeoutMs: 15_000 },
    );
    const after = await api.get(`/v1/agents/${agentId}`);
    expect(after.body.instance.status).to.equal('stopped');
    expect(after.body.agent.status).to.equal('paused');
    const op = (await api.get(`/v1/operations/${operationId}`)).body.operation;
    expect(op.status).to.equal('succeeded');
    expect(op.error).to.equal(null);

    // The board shows the same: the job among the completed ones, no longer among the failed.
    await page.goto(`${tf.url}/admin/queues/queue/stop?status=completed`);
    await page.locator(`a[href*="/queue/stop/${jobId}"]`).first().waitFor({ state: 'visible' });
    await page.goto(`${tf.url}/admin/queues/queue/stop/${jobId}`);
    await page.getByText(/Finished at|Completed at/i).first().waitFor({ state: 'visible' });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-retried-job.png'), fullPage: true });
    expect(await tf.queues.stop.getFailedCount()).to.equal(0);
  });
});
