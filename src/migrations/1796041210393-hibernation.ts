import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Hibernation1796041210393 implements MigrationInterface {
  name = 'Hibernation1796041210393';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "instances" ADD "snapshot_image_id" bigint`);
    await queryRunner.query(`ALTER TABLE "instances" ADD "snapshot_size_gb" double precision`);
    await queryRunner.query(`ALTER TYPE "agent_status" ADD VALUE 'hibernated'`);
    await queryRunner.query(`ALTER TYPE "instance_status" ADD VALUE 'hibernating'`);
    await queryRunner.query(`ALTER TYPE "instance_status" ADD VALUE 'hibernated'`);
    await queryRunner.query(`ALTER TYPE "instance_status" ADD VALUE 'waking'`);
    await queryRunner.query(`ALTER TYPE "operation_type" ADD VALUE 'hibernate'`);
    await queryRunner.query(`ALTER TYPE "operation_type" ADD VALUE 'wake'`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    // PostgreSQL cannot drop enum values: each type is rebuilt without them. Rows still in a
    // hibernation state make the casts fail, so nothing is undone while any agent is hibernated.
    await queryRunner.query(`CREATE TYPE "operation_type_old" AS ENUM('provision', 'stop', 'start', 'destroy', 'rollback', 'reconcile')`);
    await queryRunner.query(`ALTER TABLE "operations" ALTER COLUMN "type" TYPE "operation_type_old" USING "type"::"text"::"operation_type_old"`);
    await queryRunner.query(`DROP TYPE "operation_type"`);
    await queryRunner.query(`ALTER TYPE "operation_type_old" RENAME TO "operation_type"`);
    await queryRunner.query(`DROP INDEX "uq_instances_live_agent"`);
    await queryRunner.query(`ALTER TABLE "instances" ALTER COLUMN "status" DROP DEFAULT`);
    await queryRunner.query(`CREATE TYPE "instance_status_old" AS ENUM('pending', 'provisioning', 'running', 'stopping', 'stopped', 'starting', 'destroying', 'destroyed', 'failed')`);
    await queryRunner.query(`ALTER TABLE "instances" ALTER COLUMN "status" TYPE "instance_status_old" USING "status"::"text"::"instance_status_old"`);
    await queryRunner.query(`DROP TYPE "instance_status"`);
    await queryRunner.query(`ALTER TYPE "instance_status_old" RENAME TO "instance_status"`);
    await queryRunner.query(`ALTER TABLE "instances" ALTER COLUMN "status" SET DEFAULT 'pending'`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_instances_live_agent" ON "instances" ("agent_id") WHERE "status" NOT IN ('destroyed', 'failed')`);
    await queryRunner.query(`ALTER TABLE "agents" ALTER COLUMN "status" DROP DEFAULT`);
    await queryRunner.query(`CREATE TYPE "agent_status_old" AS ENUM('draft', 'provisioning', 'active', 'paused', 'error', 'destroyed')`);
    await queryRunner.query(`ALTER TABLE "agents" ALTER COLUMN "status" TYPE "agent_status_old" USING "status"::"text"::"agent_status_old"`);
    await queryRunner.query(`DROP TYPE "agent_status"`);
    await queryRunner.query(`ALTER TYPE "agent_status_old" RENAME TO "agent_status"`);
    await queryRunner.query(`ALTER TABLE "agents" ALTER COLUMN "status" SET DEFAULT 'draft'`);
    await queryRunner.query(`ALTER TABLE "instances" DROP COLUMN "snapshot_size_gb"`);
    await queryRunner.query(`ALTER TABLE "instances" DROP COLUMN "snapshot_image_id"`);
  }
}
