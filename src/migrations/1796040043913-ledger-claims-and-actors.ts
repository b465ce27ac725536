import type { MigrationInterface, QueryRunner } from 'typeorm';

export class LedgerClaimsAndActors1796040043913 implements MigrationInterface {
  name = 'LedgerClaimsAndActors1796040043913';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "operations" ADD "requested_by" character varying(100) NOT NULL DEFAULT 'system'`);
    await queryRunner.query(`ALTER TABLE "operations" ADD "claim_token" character varying(64)`);
    await queryRunner.query(`ALTER TABLE "events" ADD "actor" character varying(100) NOT NULL DEFAULT 'system'`);
    await queryRunner.query(`CREATE INDEX "idx_operations_pending" ON "operations" ("requested_at") WHERE "status" IN ('queued', 'running')`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "idx_operations_pending"`);
    await queryRunner.query(`ALTER TABLE "events" DROP COLUMN "actor"`);
    await queryRunner.query(`ALTER TABLE "operations" DROP COLUMN "claim_token"`);
    await queryRunner.query(`ALTER TABLE "operations" DROP COLUMN "requested_by"`);
  }
}
