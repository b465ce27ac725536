import type { MigrationInterface, QueryRunner } from 'typeorm';

// Reboot: an operation type and the instance status it passes through (running → rebooting → running).
export class Reboot1796600000001 implements MigrationInterface {
  name = 'Reboot1796600000001';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TYPE "operation_type" ADD VALUE 'reboot'`);
    await queryRunner.query(`ALTER TYPE "instance_status" ADD VALUE 'rebooting' BEFORE 'destroying'`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    // PostgreSQL cannot drop enum values: each type is rebuilt without them. Rows still using them
    // make the casts fail, so nothing is undone while a reboot is on record.
    await queryRunner.query(`CREATE TYPE "operation_type_old" AS ENUM('provision', 'stop', 'start', 'destroy', 'rollback', 'reconcile', 'hibernate', 'wake')`);
    await queryRunner.query(`ALTER TABLE "operations" ALTER COLUMN "type" TYPE "operation_type_old" USING "type"::"text"::"operation_type_old"`);
    await queryRunner.query(`DROP TYPE "operation_type"`);
    await queryRunner.query(`ALTER TYPE "operation_type_old" RENAME TO "operation_type"`);
    await queryRunner.query(`DROP INDEX "uq_instances_live_agent"`);
    await queryRunner.query(`ALTER TABLE "instances" ALTER COLUMN "status" DROP DEFAULT`);
    await queryRunner.query(
      `CREATE TYPE "instance_status_old" AS ENUM('pending', 'provisioning', 'running', 'stopping', 'stopped', 'starting', 'destroying', 'destroyed', 'failed', 'hibernating', 'hibernated', 'waking')`,
    );
    await queryRunner.query(`ALTER TABLE "instances" ALTER COLUMN "status" TYPE "instance_status_old" USING "status"::"text"::"instance_status_old"`);
    await queryRunner.query(`DROP TYPE "instance_status"`);
    await queryRunner.query(`ALTER TYPE "instance_status_old" RENAME TO "instance_status"`);
    await queryRunner.query(`ALTER TABLE "instances" ALTER COLUMN "status" SET DEFAULT 'pending'`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_instances_live_agent" ON "instances" ("agent_id") WHERE "status" NOT IN ('destroyed', 'failed')`);
  }
}
