import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ProvisioningJobAuthKey1795728505134 implements MigrationInterface {
  name = 'ProvisioningJobAuthKey1795728505134';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" ADD "auth_key_id" character varying(64)`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" DROP COLUMN "auth_key_id"`);
  }
}
