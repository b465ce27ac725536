import { expect } from 'chai';
import { SESSION_COOKIE, SessionSealer } from '../../src/console/session';
import { API_TOKEN, startApiHarness, type ApiHarness } from './harness';

// The console over plain HTTP: its headers, the session cookie and what it refuses. (The pages as a
// person uses them are tested in Chromium: test/browser/console.test.ts.)

describe('HTTP: the console at /console', () => {
  let h: ApiHarness;
  let readToken: { id: string; token: string };

  before(async () => {
    h = await startApiHarness('console');
    const res = await h.api.request('POST', '/v1/tokens', { body: { name: 'console-http-read', scope: 'read' } });
    expect(res.status, res.text).to.equal(201);
    readToken = res.body;
  });

  after(async () => {
    await h?.close();
  });

  const url = (path: string) => `${h.api.baseUrl}${path}`;
  const signIn = (token: string, headers: Record<string, string> = {}, next?: string) =>
    fetch(url('/console/sign-in'), {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams({ token, ...(next ? { next } : {}) }),
    });
  const cookieOf = (res: Response) => res.headers.get('set-cookie')!.split(';')[0]!;
  const page = (path: string, cookie: string) => fetch(url(path), { redirect: 'manual', headers: { cookie } });

  it('sends a visitor without a session to sign-in, and serves the sign-in page under a strict CSP', async () => {
    const res = await fetch(url('/console/agents?status=active'), { redirect: 'manual' });
    expect(res.status).to.equal(303);
    expect(res.headers.get('location')).to.equal('/console/sign-in?next=%2Fconsole%2Fagents%3Fstatus%3Dactive');
    const form = await fetch(url('/console/sign-in'));
    expect(form.status).to.equal(200);
    expect(form.headers.get('content-type')).to.match(/^text\/html/);
    const csp = form.headers.get('content-security-policy')!;
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "form-action 'self'", "frame-ancestors 'none'"]) {
      expect(csp).to.contain(directive);
    }
    expect(csp).not.to.contain('unsafe');
    expect(form.headers.get('x-content-type-options')).to.equal('nosniff');
    expect(form.headers.get('cache-control')).to.equal('no-store');
    const html = await form.text();
    expect(html).not.to.match(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.to.match(/\sstyle=|\son[a-z]+=/i);
  });

  it('serves its assets from the package', async () => {
    for (const [file, type] of [
      ['console.js', 'text/javascript'],
      ['console.css', 'text/css'],
      ['pico.min.css', 'text/css'],
      ['chart.umd.min.js', 'text/javascript'],
    ] as const) {
      const res = await fetch(url(`/console/assets/${file}`));
      expect(res.status, file).to.equal(200);
      expect(res.headers.get('content-type'), file).to.contain(type);
      expect((await res.text()).length, file).to.be.greaterThan(100);
    }
    expect((await fetch(url('/console/assets/..%2Frouter.ts'))).status).to.equal(404);
    expect((await fetch(url('/console/assets/constructor'))).status).to.equal(404);
  });

  it('exchanges a token for a sealed HttpOnly, SameSite=Strict cookie (Secure behind https) and follows only console paths', async () => {
    const res = await signIn(API_TOKEN, {}, '/console/findings');
    expect(res.status).to.equal(303);
    expect(res.headers.get('location')).to.equal('/console/findings');
    const cookie = res.headers.get('set-cookie')!;
    expect(cookie).to.match(new RegExp(`^${SESSION_COOKIE}=v1\\.`));
    expect(cookie).to.contain('HttpOnly').and.to.contain('SameSite=Strict').and.to.contain('Path=/console').and.to.match(/Max-Age=28800/);
    expect(cookie).not.to.contain('Secure').and.not.to.contain(API_TOKEN);

    const behindHttps = await signIn(API_TOKEN, { 'x-forwarded-proto': 'https' });
    expect(behindHttps.headers.get('set-cookie')).to.contain('Secure');
    for (const next of ['https://evil.example/', '//evil.example/console', '/console/../admin/queues', '/v1/tokens']) {
      expect((await signIn(API_TOKEN, {}, next)).headers.get('location'), next).to.equal('/console');
    }

    const fleet = await page('/console', cookieOf(res));
    expect(fleet.status).to.equal(200);
    expect(await fleet.text()).to.contain('Signed in as <strong>bootstrap</strong> (admin)');
  });

  it('refuses a wrong token (401 page), and a sign-in or form posted from another origin', async () => {
    const wrong = await signIn('tf_' + 'x'.repeat(43));
    expect(wrong.status).to.equal(401);
    expect(wrong.headers.get('set-cookie')).to.equal(null);
    expect(await wrong.text()).to.contain('not valid');

    expect((await signIn(API_TOKEN, { origin: 'https://evil.example' })).status).to.equal(403);
    // A browser that hides the Origin still says where the request came from.
    expect((await signIn(API_TOKEN, { 'sec-fetch-site': 'cross-site' })).status).to.equal(403);
    expect((await signIn(API_TOKEN, { 'sec-fetch-site': 'same-site' })).status).to.equal(403);
    expect((await signIn(API_TOKEN, { 'sec-fetch-site': 'same-origin' })).status).to.equal(303);
    const cookie = cookieOf(await signIn(readToken.token));
    const html = await (await page('/console/findings', cookie)).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
    const foreign = await fetch(url('/console/sign-out'), {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf }),
    });
    expect(foreign.status).to.equal(403);
    expect(foreign.headers.get('content-type')).to.match(/^application\/problem\+json/);
    // A browser with a stale form gets a page saying so.
    const stale = await fetch(url('/console/sign-out'), {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, accept: 'text/html,application/xhtml+xml', 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: 'stale' }),
    });
    expect(stale.status).to.equal(403);
    expect(stale.headers.get('content-type')).to.match(/^text\/html/);
    expect(await stale.text()).to.contain('reload the page and try again');
    const own = await fetch(url('/console/sign-out'), {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, origin: h.api.baseUrl, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf }),
    });
    expect(own.status).to.equal(303);
    expect(own.headers.get('set-cookie')).to.match(/Max-Age=0/);
  });

  it('ends a session whose token is revoked, and one that expired or was tampered with', async () => {
    const cookie = cookieOf(await signIn(readToken.token));
    expect((await page('/console/agents', cookie)).status).to.equal(200);
    expect((await h.api.request('DELETE', `/v1/tokens/${readToken.id}`)).status).to.equal(204);
    const after = await page('/console/agents', cookie);
    expect(after.status).to.equal(303);
    expect(after.headers.get('location')).to.equal('/console/sign-in?next=%2Fconsole%2Fagents&expired=1');
    expect(after.headers.get('set-cookie')).to.match(/Max-Age=0/);

    const sealer = new SessionSealer(API_TOKEN);
    const expired = sealer.seal({ ...sealer.create(API_TOKEN, 1000), expiresAt: Date.now() - 1 });
    expect((await page('/console', `${SESSION_COOKIE}=${expired}`)).status).to.equal(303);
    const good = sealer.seal(sealer.create(API_TOKEN, 60_000));
    expect((await page('/console', `${SESSION_COOKIE}=${good}`)).status).to.equal(200);
    const tampered = good.slice(0, -3) + (good.endsWith('AAA') ? 'BBB' : 'AAA');
    expect((await page('/console', `${SESSION_COOKIE}=${tampered}`)).status).to.equal(303);
    // Sealed under another API_TOKEN: another deployment's cookie opens nothing here.
    const other = new SessionSealer('another-deployment-token');
    expect((await page('/console', `${SESSION_COOKIE}=${other.seal(other.create(API_TOKEN, 60_000))}`)).status).to.equal(303);
  });
});
