import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ReconcileReports1795726099311 implements MigrationInterface {
  name = 'ReconcileReports1795726099311';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE "reconcile_reports" ("id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL, "trigger" character varying(16) NOT NULL, "operation_id" uuid, "started_at" TIMESTAMP WITH TIME ZONE NOT NULL, "finished_at" TIMESTAMP WITH TIME ZONE NOT NULL, "report" jsonb NOT NULL, CONSTRAINT "pk_reconcile_reports" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_reconcile_reports_finished" ON "reconcile_reports" ("finished_at")`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "idx_reconcile_reports_finished"`);
    await queryRunner.query(`DROP TABLE "reconcile_reports"`);
  }
}
