import type { MigrationInterface, QueryRunner } from 'typeorm';

// What an operation was asked to do beyond its type (a resize's target server type, say): declared
// and validated by the type's descriptor (src/operations/types). Every type so far takes none.
export class OperationArgs1796600000000 implements MigrationInterface {
  name = 'OperationArgs1796600000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "operations" ADD "args" jsonb NOT NULL DEFAULT '{}'`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "operations" DROP COLUMN "args"`);
  }
}
