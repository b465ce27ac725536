import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ApiTokensAndOperationListIndexes1796040064728 implements MigrationInterface {
  name = 'ApiTokensAndOperationListIndexes1796040064728';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TYPE "api_token_scope" AS ENUM('read', 'operate', 'admin')`);
    await queryRunner.query(`CREATE TABLE "api_tokens" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "name" character varying(64) NOT NULL, "scope" "api_token_scope" NOT NULL, "token_hash" character(64) NOT NULL, "token_prefix" character varying(16) NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "expires_at" TIMESTAMP WITH TIME ZONE, "revoked_at" TIMESTAMP WITH TIME ZONE, "last_used_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "pk_api_tokens" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_api_tokens_hash" ON "api_tokens" ("token_hash")`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_api_tokens_live_name" ON "api_tokens" ("name") WHERE "revoked_at" IS NULL`);
    await queryRunner.query(`CREATE INDEX "idx_operations_status_requested" ON "operations" ("status", "requested_at", "id")`);
    await queryRunner.query(`CREATE INDEX "idx_operations_requested" ON "operations" ("requested_at", "id")`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "idx_operations_requested"`);
    await queryRunner.query(`DROP INDEX "idx_operations_status_requested"`);
    await queryRunner.query(`DROP INDEX "uq_api_tokens_live_name"`);
    await queryRunner.query(`DROP INDEX "uq_api_tokens_hash"`);
    await queryRunner.query(`DROP TABLE "api_tokens"`);
    await queryRunner.query(`DROP TYPE "api_token_scope"`);
  }
}
