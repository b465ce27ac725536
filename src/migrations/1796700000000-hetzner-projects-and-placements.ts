import type { MigrationInterface, QueryRunner } from 'typeorm';

// Several Hetzner projects and placement fallback: the project an instance's server (and its
// snapshot) lives in, and the places the cloud refused before the instance landed where it is.
// Instances that already have a server were made with HETZNER_API_TOKEN: the project `default`.
export class HetznerProjectsAndPlacements1796700000000 implements MigrationInterface {
  name = 'HetznerProjectsAndPlacements1796700000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "instances" ADD "hetzner_project" character varying(32)`);
    await queryRunner.query(`ALTER TABLE "instances" ADD "placement_refusals" jsonb NOT NULL DEFAULT '[]'`);
    await queryRunner.query(
      `UPDATE "instances" SET "hetzner_project" = 'default' WHERE "server_id" IS NOT NULL OR "snapshot_image_id" IS NOT NULL`,
    );
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "instances" DROP COLUMN "placement_refusals"`);
    await queryRunner.query(`ALTER TABLE "instances" DROP COLUMN "hetzner_project"`);
  }
}
