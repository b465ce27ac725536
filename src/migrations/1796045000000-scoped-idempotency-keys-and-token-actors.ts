import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ScopedIdempotencyKeysAndTokenActors1796045000000 implements MigrationInterface {
  name = 'ScopedIdempotencyKeysAndTokenActors1796045000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "operations" ADD "idempotency_route" character varying(100)`);
    // Widened in place (no rewrite): actors are now `token:<name>#<token id>`.
    await queryRunner.query(`ALTER TABLE "operations" ALTER COLUMN "requested_by" TYPE character varying(128)`);
    await queryRunner.query(`ALTER TABLE "events" ALTER COLUMN "actor" TYPE character varying(128)`);
    await queryRunner.query(`ALTER TABLE "webhook_subscriptions" ALTER COLUMN "created_by" TYPE character varying(128)`);
    // Client keys were `client:<key>`, shared by every token; now `client:<owner>:<key>`. The owner of
    // an existing key is the token of its requester's name (the live one, else the newest), or
    // `bootstrap`; a name no token has any more keeps its key under that name, where no request finds it.
    await queryRunner.query(`UPDATE "operations" o SET "idempotency_key" = 'client:' || COALESCE(
        CASE WHEN o."requested_by" = 'bootstrap' THEN 'bootstrap' END,
        (SELECT t."id"::text FROM "api_tokens" t WHERE t."name" = o."requested_by" ORDER BY (t."revoked_at" IS NULL) DESC, t."created_at" DESC LIMIT 1),
        o."requested_by") || ':' || substr(o."idempotency_key", 8)
      WHERE o."idempotency_key" LIKE 'client:%'`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    // Back to one key space: where several owners used one key, the newest operation keeps it.
    await queryRunner.query(`UPDATE "operations" o SET "idempotency_key" = CASE WHEN d.n = 1 THEN d.plain END
      FROM (SELECT "id", 'client:' || substring("idempotency_key" from '^client:[^:]*:(.*)$') AS plain,
                   row_number() OVER (PARTITION BY substring("idempotency_key" from '^client:[^:]*:(.*)$') ORDER BY "requested_at" DESC, "id" DESC) AS n
              FROM "operations" WHERE "idempotency_key" LIKE 'client:%') d
      WHERE d."id" = o."id"`);
    await queryRunner.query(`ALTER TABLE "webhook_subscriptions" ALTER COLUMN "created_by" TYPE character varying(100) USING left("created_by", 100)`);
    await queryRunner.query(`ALTER TABLE "events" ALTER COLUMN "actor" TYPE character varying(100) USING left("actor", 100)`);
    await queryRunner.query(`ALTER TABLE "operations" ALTER COLUMN "requested_by" TYPE character varying(100) USING left("requested_by", 100)`);
    await queryRunner.query(`ALTER TABLE "operations" DROP COLUMN "idempotency_route"`);
  }
}
