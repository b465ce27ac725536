import type { MigrationInterface, QueryRunner } from 'typeorm';

// A sealed secret (`enc:v1:<key id>:<base64url>`, about 120 characters) does not fit the old
// varchar(100). The type changes in place: existing rows keep their plain `whsec_…` secret, which
// keeps working and is sealed at the next start with WEBHOOK_SECRET_KEY set (WebhookRepository.resealSecrets).
export class WebhookSecretsSealed1796561172137 implements MigrationInterface {
  name = 'WebhookSecretsSealed1796561172137';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "webhook_subscriptions" ALTER COLUMN "secret" TYPE text`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    // Only possible while every secret is still in the clear (sealed ones are longer than 100).
    await queryRunner.query(`ALTER TABLE "webhook_subscriptions" ALTER COLUMN "secret" TYPE character varying(100)`);
  }
}
