import type { MigrationInterface, QueryRunner } from 'typeorm';

export class OwnershipFindings1796041285492 implements MigrationInterface {
  name = 'OwnershipFindings1796041285492';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE "ownership_findings" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "resource_type" character varying(16) NOT NULL, "resource_id" character varying(64) NOT NULL, "resource_name" character varying(255), "action" character varying(16) NOT NULL, "operation" character varying(32) NOT NULL, "operation_id" uuid, "agent_id" uuid, "instance_id" uuid, "matched" jsonb NOT NULL, "missing" jsonb NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "resolved_at" TIMESTAMP WITH TIME ZONE, "resolution" text, CONSTRAINT "pk_ownership_findings" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_ownership_findings_open" ON "ownership_findings" ("resolved_at", "created_at")`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "idx_ownership_findings_open"`);
    await queryRunner.query(`DROP TABLE "ownership_findings"`);
  }
}
