import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ProvisioningJobAuthKeys1795730754702 implements MigrationInterface {
  name = 'ProvisioningJobAuthKeys1795730754702';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" ADD "auth_key_ids" character varying(64) array NOT NULL DEFAULT '{}'`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" DROP COLUMN "auth_key_ids"`);
  }
}
