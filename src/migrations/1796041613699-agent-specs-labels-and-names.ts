import type { MigrationInterface, QueryRunner } from 'typeorm';

export class AgentSpecsLabelsAndNames1796041613699 implements MigrationInterface {
  name = 'AgentSpecsLabelsAndNames1796041613699';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "agents" ADD "labels" jsonb NOT NULL DEFAULT '{}'`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "spec" jsonb`);
    await queryRunner.query(`CREATE INDEX "idx_agents_name_created" ON "agents" ("name", "created_at", "id")`);
    await queryRunner.query(`CREATE INDEX "idx_agents_status_created" ON "agents" ("status", "created_at", "id")`);
    await queryRunner.query(`CREATE INDEX "idx_agents_created" ON "agents" ("created_at", "id")`);
    // Names were not unique before: all but the oldest live agent of a name get their id's first 8 characters appended.
    await queryRunner.query(`UPDATE "agents" a SET "name" = left(a."name", 54) || '-' || left(a."id"::text, 8) FROM (SELECT "id", row_number() OVER (PARTITION BY "name" ORDER BY "created_at", "id") AS n FROM "agents" WHERE "status" <> 'destroyed') d WHERE d."id" = a."id" AND d.n > 1`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_agents_live_name" ON "agents" ("name") WHERE "status" <> 'destroyed'`);
    await queryRunner.query(`CREATE INDEX "idx_agents_labels" ON "agents" USING gin ("labels" jsonb_path_ops)`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "idx_agents_labels"`);
    await queryRunner.query(`DROP INDEX "uq_agents_live_name"`);
    await queryRunner.query(`DROP INDEX "idx_agents_created"`);
    await queryRunner.query(`DROP INDEX "idx_agents_status_created"`);
    await queryRunner.query(`DROP INDEX "idx_agents_name_created"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "spec"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "labels"`);
  }
}
