import type { MigrationInterface, QueryRunner } from 'typeorm';

// Pools: their table, an agent's membership (pool and role), and the claim operation type.
export class Pools1796710000000 implements MigrationInterface {
  name = 'Pools1796710000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TYPE "pool_standby_mode" AS ENUM('running', 'stopped', 'hibernated')`);
    await queryRunner.query(`CREATE TABLE "pools" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "name" character varying(40) NOT NULL, "spec" jsonb NOT NULL, "min_ready" integer NOT NULL, "standby" "pool_standby_mode" NOT NULL, "max_size" integer, "schedules" jsonb NOT NULL DEFAULT '[]', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_pools" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_pools_name" ON "pools" ("name")`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "pool_id" uuid`);
    await queryRunner.query(`CREATE TYPE "agent_pool_role" AS ENUM('standby', 'claimed')`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "pool_role" "agent_pool_role"`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "claimed_at" TIMESTAMP WITH TIME ZONE`);
    await queryRunner.query(`ALTER TYPE "operation_type" ADD VALUE 'claim'`);
    await queryRunner.query(`CREATE INDEX "idx_agents_pool_role" ON "agents" ("pool_id", "pool_role")`);
    await queryRunner.query(`ALTER TABLE "agents" ADD CONSTRAINT "fk_agents_pool" FOREIGN KEY ("pool_id") REFERENCES "pools"("id") ON DELETE SET NULL ON UPDATE NO ACTION`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "agents" DROP CONSTRAINT "fk_agents_pool"`);
    await queryRunner.query(`DROP INDEX "idx_agents_pool_role"`);
    await queryRunner.query(`CREATE TYPE "operation_type_old" AS ENUM('provision', 'stop', 'start', 'destroy', 'rollback', 'reconcile', 'hibernate', 'wake', 'reboot')`);
    await queryRunner.query(`ALTER TABLE "operations" ALTER COLUMN "type" TYPE "operation_type_old" USING "type"::"text"::"operation_type_old"`);
    await queryRunner.query(`DROP TYPE "operation_type"`);
    await queryRunner.query(`ALTER TYPE "operation_type_old" RENAME TO "operation_type"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "claimed_at"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "pool_role"`);
    await queryRunner.query(`DROP TYPE "agent_pool_role"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "pool_id"`);
    await queryRunner.query(`DROP INDEX "uq_pools_name"`);
    await queryRunner.query(`DROP TABLE "pools"`);
    await queryRunner.query(`DROP TYPE "pool_standby_mode"`);
  }
}
