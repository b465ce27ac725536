import type { MigrationInterface, QueryRunner } from 'typeorm';

// Agent activity (heartbeats, the bootstrap's end), the agent credential's scope, leases, expiry, and
// the reason tailfleet gives for an operation it asks for itself.
export class AgentActivityLeasesExpiry1796720000000 implements MigrationInterface {
  name = 'AgentActivityLeasesExpiry1796720000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE "agent_leases" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "agent_id" uuid NOT NULL, "holder" character varying(200) NOT NULL, "expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, "released_at" TIMESTAMP WITH TIME ZONE, "created_by" character varying(128) NOT NULL DEFAULT 'system', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_agent_leases" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_agent_leases_agent" ON "agent_leases" ("agent_id", "expires_at")`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "expires_at" TIMESTAMP WITH TIME ZONE`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "expiry_warned_for" TIMESTAMP WITH TIME ZONE`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "last_activity_at" TIMESTAMP WITH TIME ZONE`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "last_activity_kind" character varying(16)`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "last_heartbeat_at" TIMESTAMP WITH TIME ZONE`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "heartbeat" jsonb`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "bootstrap_status" character varying(8)`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "bootstrap_detail" text`);
    await queryRunner.query(`ALTER TABLE "agents" ADD "bootstrap_at" TIMESTAMP WITH TIME ZONE`);
    await queryRunner.query(`ALTER TABLE "api_tokens" ADD "agent_id" uuid`);
    await queryRunner.query(`ALTER TABLE "operations" ADD "reason" text`);
    await queryRunner.query(`ALTER TYPE "api_token_scope" ADD VALUE 'agent'`);
    await queryRunner.query(`CREATE INDEX "idx_agents_expires" ON "agents" ("expires_at") WHERE "expires_at" IS NOT NULL AND "status" <> 'destroyed'`);
    await queryRunner.query(`CREATE INDEX "idx_api_tokens_agent" ON "api_tokens" ("agent_id") WHERE "agent_id" IS NOT NULL`);
    await queryRunner.query(`ALTER TABLE "agent_leases" ADD CONSTRAINT "fk_agent_leases_agent" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE NO ACTION`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "agent_leases" DROP CONSTRAINT "fk_agent_leases_agent"`);
    await queryRunner.query(`DROP INDEX "idx_api_tokens_agent"`);
    await queryRunner.query(`DROP INDEX "idx_agents_expires"`);
    await queryRunner.query(`CREATE TYPE "api_token_scope_old" AS ENUM('read', 'operate', 'admin')`);
    await queryRunner.query(`ALTER TABLE "api_tokens" ALTER COLUMN "scope" TYPE "api_token_scope_old" USING "scope"::"text"::"api_token_scope_old"`);
    await queryRunner.query(`DROP TYPE "api_token_scope"`);
    await queryRunner.query(`ALTER TYPE "api_token_scope_old" RENAME TO "api_token_scope"`);
    await queryRunner.query(`ALTER TABLE "operations" DROP COLUMN "reason"`);
    await queryRunner.query(`ALTER TABLE "api_tokens" DROP COLUMN "agent_id"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "bootstrap_at"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "bootstrap_detail"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "bootstrap_status"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "heartbeat"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "last_heartbeat_at"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "last_activity_kind"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "last_activity_at"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "expiry_warned_for"`);
    await queryRunner.query(`ALTER TABLE "agents" DROP COLUMN "expires_at"`);
    await queryRunner.query(`DROP INDEX "idx_agent_leases_agent"`);
    await queryRunner.query(`DROP TABLE "agent_leases"`);
  }
}
