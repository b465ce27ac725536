import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../../src/config';
import { WebhookSecretBox, WebhookSecretError, webhookKeyId } from '../../src/webhooks/secret-box';
import { newWebhookSecret } from '../../src/webhooks/signing';
import { createSuite, type Suite } from '../pipeline/stack';
import { problemsOf, validEnv } from '../helpers/config';

// Webhook secrets at rest: sealed with AES-256-GCM under WEBHOOK_SECRET_KEY, bound to their
// subscription, readable under rotated-out keys, and re-sealed with the current key at start-up.

const baseEnv = validEnv;

describe('webhooks: secrets at rest', function () {
  this.timeout(60_000);

  const keyA = randomBytes(32);
  const keyB = randomBytes(32);

  describe('the secret box', () => {
    const id = randomUUID();
    const secret = newWebhookSecret();

    it('stores a secret sealed, with its key id, and nothing of it in clear', () => {
      const box = new WebhookSecretBox({ primary: keyA, previous: [] });
      const stored = box.seal(secret, id);
      expect(stored).to.match(new RegExp(`^enc:v1:${webhookKeyId(keyA)}:[A-Za-z0-9_-]+$`));
      expect(stored).to.not.include(secret.slice('whsec_'.length, 20));
      expect(Buffer.from(stored.split(':')[3]!, 'base64url').toString('latin1')).to.not.include('whsec_');
      // A fresh IV each time: the same secret never looks the same twice.
      expect(box.seal(secret, id)).to.not.equal(stored);
      expect(box.open(stored, id)).to.equal(secret);
    });

    it('refuses a sealed secret moved to another subscription, altered, or under an unknown key', () => {
      const stored = new WebhookSecretBox({ primary: keyA, previous: [] }).seal(secret, id);
      const box = new WebhookSecretBox({ primary: keyA, previous: [] });
      expect(() => box.open(stored, randomUUID())).to.throw(WebhookSecretError, /does not decrypt/);
      const payload = Buffer.from(stored.split(':')[3]!, 'base64url');
      payload[20]! ^= 1;
      const altered = `${stored.split(':').slice(0, 3).join(':')}:${payload.toString('base64url')}`;
      expect(() => box.open(altered, id)).to.throw(WebhookSecretError, /does not decrypt/);
      expect(() => new WebhookSecretBox({ primary: keyB, previous: [] }).open(stored, id)).to.throw(
        WebhookSecretError,
        new RegExp(`key ${webhookKeyId(keyA)}, which is neither`),
      );
      expect(() => new WebhookSecretBox(null).open(stored, id)).to.throw(WebhookSecretError);
    });

    it('rotates: the new key seals, the previous one still opens, and what needs sealing again is known', () => {
      const old = new WebhookSecretBox({ primary: keyA, previous: [] });
      const rotated = new WebhookSecretBox({ primary: keyB, previous: [keyA] });
      const underA = old.seal(secret, id);
      expect(rotated.open(underA, id)).to.equal(secret);
      expect(rotated.needsReseal(underA)).to.equal(true);
      expect(rotated.needsReseal(secret)).to.equal(true);
      const underB = rotated.seal(secret, id);
      expect(underB.startsWith(`enc:v1:${webhookKeyId(keyB)}:`)).to.equal(true);
      expect(rotated.needsReseal(underB)).to.equal(false);
      expect(new WebhookSecretBox({ primary: keyB, previous: [] }).open(underB, id)).to.equal(secret);
    });

    it('without a key, stores secrets as they are and reads secrets written before encryption', () => {
      const box = new WebhookSecretBox(null);
      expect(box.encrypts).to.equal(false);
      expect(box.seal(secret, id)).to.equal(secret);
      expect(box.needsReseal(secret)).to.equal(false);
      expect(new WebhookSecretBox({ primary: keyA, previous: [] }).open(secret, id)).to.equal(secret);
    });
  });

  describe('configuration', () => {
    it('reads WEBHOOK_SECRET_KEY as base64 or hex, or from WEBHOOK_SECRET_KEY_FILE, with previous keys', () => {
      expect(loadConfig(baseEnv).webhooks.secretKeys).to.equal(null);
      const fromBase64 = loadConfig({ ...baseEnv, WEBHOOK_SECRET_KEY: keyA.toString('base64') }).webhooks.secretKeys!;
      expect(fromBase64.primary.equals(keyA)).to.equal(true);
      expect(fromBase64.previous).to.deep.equal([]);
      const fromHex = loadConfig({ ...baseEnv, WEBHOOK_SECRET_KEY: keyA.toString('hex') }).webhooks.secretKeys!;
      expect(fromHex.primary.equals(keyA)).to.equal(true);

      const dir = mkdtempSync(join(tmpdir(), 'tf-webhook-key-'));
      writeFileSync(join(dir, 'key'), `${keyB.toString('base64')}\n`);
      const rotated = loadConfig({
        ...baseEnv,
        WEBHOOK_SECRET_KEY_FILE: join(dir, 'key'),
        WEBHOOK_SECRET_KEYS_PREVIOUS: `${keyA.toString('base64')}, ${randomBytes(32).toString('hex')}`,
      }).webhooks.secretKeys!;
      expect(rotated.primary.equals(keyB)).to.equal(true);
      expect(rotated.previous).to.have.length(2);
      expect(rotated.previous[0]!.equals(keyA)).to.equal(true);
    });

    it('refuses keys that are not 32 bytes, and previous keys without a current one', () => {
      for (const bad of ['short', randomBytes(16).toString('base64'), randomBytes(31).toString('hex'), 'x'.repeat(64)]) {
        const problems = problemsOf({ ...baseEnv, WEBHOOK_SECRET_KEY: bad });
        expect(problems.some((p) => p.startsWith('WEBHOOK_SECRET_KEY: must be 32 random bytes')), bad).to.equal(true);
        expect(problems.join(' '), 'the key is not echoed').to.not.include(bad.slice(0, 10));
      }
      expect(problemsOf({ ...baseEnv, WEBHOOK_SECRET_KEY: keyA.toString('base64'), WEBHOOK_SECRET_KEYS_PREVIOUS: 'nope' })[0]).to.match(
        /^WEBHOOK_SECRET_KEYS_PREVIOUS: each comma-separated key must be 32 random bytes/,
      );
      expect(problemsOf({ ...baseEnv, WEBHOOK_SECRET_KEYS_PREVIOUS: keyA.toString('base64') })).to.deep.equal([
        'WEBHOOK_SECRET_KEYS_PREVIOUS: needs WEBHOOK_SECRET_KEY, the key new secrets are encrypted with',
      ]);
    });
  });

  describe('at start-up', () => {
    let suite: Suite;

    before(async () => {
      suite = await createSuite('webhook-secrets');
    });

    after(async () => {
      await suite?.close();
    });

    async function storedSecrets(): Promise<Map<string, string>> {
      const rows: Array<{ id: string; secret: string }> = await suite.db.dataSource.query(`SELECT id, secret FROM webhook_subscriptions`);
      return new Map(rows.map((r) => [r.id, r.secret]));
    }

    it('encrypts secrets stored in clear, then seals them again under a new key after a rotation', async () => {
      // Rows written before encryption existed: the secret in clear.
      const plain = new Map<string, string>();
      for (let i = 0; i < 3; i++) {
        const secret = newWebhookSecret();
        const [row] = (await suite.db.dataSource.query(
          `INSERT INTO webhook_subscriptions (url, events, secret) VALUES ('https://93.184.215.14/hook', '{operation.failed}', $1) RETURNING id`,
          [secret],
        )) as Array<{ id: string }>;
        plain.set(row!.id, secret);
      }

      const first = await suite.launch({ env: { ROLE: 'api', WEBHOOK_SECRET_KEY: keyA.toString('base64') } });
      let stored = await storedSecrets();
      for (const [id, secret] of plain) {
        expect(stored.get(id)!.startsWith(`enc:v1:${webhookKeyId(keyA)}:`), id).to.equal(true);
        expect(stored.get(id)).to.not.include(secret.slice('whsec_'.length));
        expect(first.webhooks.signingSecret({ id, secret: stored.get(id)! })).to.equal(secret);
      }
      await first.stop();

      // Rotation: the new key is WEBHOOK_SECRET_KEY, the old one moves to WEBHOOK_SECRET_KEYS_PREVIOUS.
      const second = await suite.launch({
        env: { ROLE: 'api', WEBHOOK_SECRET_KEY: keyB.toString('hex'), WEBHOOK_SECRET_KEYS_PREVIOUS: keyA.toString('base64') },
      });
      stored = await storedSecrets();
      for (const [id, secret] of plain) {
        expect(stored.get(id)!.startsWith(`enc:v1:${webhookKeyId(keyB)}:`), id).to.equal(true);
        expect(second.webhooks.signingSecret({ id, secret: stored.get(id)! })).to.equal(secret);
      }
      // Every row is under the new key now: the old one can be dropped.
      const onlyB = new WebhookSecretBox({ primary: keyB, previous: [] });
      for (const [id, secret] of plain) expect(onlyB.open(stored.get(id)!, id)).to.equal(secret);
      await second.stop();
    });
  });
});
