import type { MigrationInterface, QueryRunner } from 'typeorm';

export class InitialSchema1795725990969 implements MigrationInterface {
  name = 'InitialSchema1795725990969';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TYPE "agent_status" AS ENUM('draft', 'provisioning', 'active', 'paused', 'error', 'destroyed')`);
    await queryRunner.query(`CREATE TABLE "agents" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "name" character varying(63) NOT NULL, "status" "agent_status" NOT NULL DEFAULT 'draft', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_agents" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE TYPE "instance_status" AS ENUM('pending', 'provisioning', 'running', 'stopping', 'stopped', 'starting', 'destroying', 'destroyed', 'failed')`);
    await queryRunner.query(`CREATE TABLE "instances" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "agent_id" uuid NOT NULL, "server_id" bigint, "server_name" character varying(63), "server_ip" inet, "tailscale_device_id" character varying(64), "tailscale_ip" inet, "tailscale_hostname" character varying(63), "location" character varying(32), "server_type" character varying(32) NOT NULL, "image" character varying(128) NOT NULL, "status" "instance_status" NOT NULL DEFAULT 'pending', "error" text, "started_at" TIMESTAMP WITH TIME ZONE, "stopped_at" TIMESTAMP WITH TIME ZONE, "destroyed_at" TIMESTAMP WITH TIME ZONE, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_instances" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_instances_server_id" ON "instances" ("server_id")`);
    await queryRunner.query(`CREATE INDEX "idx_instances_agent_created" ON "instances" ("agent_id", "created_at")`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_instances_live_agent" ON "instances" ("agent_id") WHERE "status" NOT IN ('destroyed', 'failed')`);
    await queryRunner.query(`CREATE TYPE "provisioning_job_status" AS ENUM('queued', 'running', 'succeeded', 'failed', 'rolled_back')`);
    await queryRunner.query(`CREATE TABLE "provisioning_jobs" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "agent_id" uuid NOT NULL, "instance_id" uuid NOT NULL, "status" "provisioning_job_status" NOT NULL DEFAULT 'queued', "attempts" integer NOT NULL DEFAULT '0', "error" text, "failed_step" character varying(64), "started_at" TIMESTAMP WITH TIME ZONE, "finished_at" TIMESTAMP WITH TIME ZONE, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_provisioning_jobs" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_provisioning_jobs_instance" ON "provisioning_jobs" ("instance_id")`);
    await queryRunner.query(`CREATE INDEX "idx_provisioning_jobs_agent" ON "provisioning_jobs" ("agent_id")`);
    await queryRunner.query(`CREATE TYPE "operation_type" AS ENUM('provision', 'stop', 'start', 'destroy', 'rollback', 'reconcile')`);
    await queryRunner.query(`CREATE TYPE "operation_status" AS ENUM('queued', 'running', 'succeeded', 'failed', 'cancelled')`);
    await queryRunner.query(`CREATE TABLE "operations" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "type" "operation_type" NOT NULL, "agent_id" uuid, "provisioning_job_id" uuid, "status" "operation_status" NOT NULL DEFAULT 'queued', "idempotency_key" character varying(255), "queue_job_id" character varying(255), "attempts" integer NOT NULL DEFAULT '0', "progress" integer NOT NULL DEFAULT '0', "current_step" character varying(64), "error" text, "failed_step" character varying(64), "requested_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "started_at" TIMESTAMP WITH TIME ZONE, "finished_at" TIMESTAMP WITH TIME ZONE, "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "ck_operations_attempts" CHECK ("attempts" >= 0), CONSTRAINT "ck_operations_progress" CHECK ("progress" BETWEEN 0 AND 100), CONSTRAINT "pk_operations" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_operations_provisioning_job" ON "operations" ("provisioning_job_id")`);
    await queryRunner.query(`CREATE INDEX "idx_operations_agent_requested" ON "operations" ("agent_id", "requested_at")`);
    await queryRunner.query(`CREATE UNIQUE INDEX "uq_operations_idempotency_key" ON "operations" ("idempotency_key")`);
    await queryRunner.query(`CREATE TYPE "event_entity_type" AS ENUM('agent', 'instance', 'provisioning_job', 'operation')`);
    await queryRunner.query(`CREATE TABLE "events" ("id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL, "entity_type" "event_entity_type" NOT NULL, "entity_id" uuid NOT NULL, "agent_id" uuid, "from_status" character varying(32), "to_status" character varying(32) NOT NULL, "reason" text NOT NULL, "operation_id" uuid, "at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(), CONSTRAINT "pk_events" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_events_entity" ON "events" ("entity_type", "entity_id")`);
    await queryRunner.query(`CREATE INDEX "idx_events_agent_at" ON "events" ("agent_id", "at")`);
    await queryRunner.query(`ALTER TABLE "instances" ADD CONSTRAINT "fk_instances_agent" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" ADD CONSTRAINT "fk_provisioning_jobs_agent" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" ADD CONSTRAINT "fk_provisioning_jobs_instance" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
    await queryRunner.query(`ALTER TABLE "operations" ADD CONSTRAINT "fk_operations_agent" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
    await queryRunner.query(`ALTER TABLE "operations" ADD CONSTRAINT "fk_operations_provisioning_job" FOREIGN KEY ("provisioning_job_id") REFERENCES "provisioning_jobs"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
    await queryRunner.query(`ALTER TABLE "events" ADD CONSTRAINT "fk_events_agent" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
    await queryRunner.query(`ALTER TABLE "events" ADD CONSTRAINT "fk_events_operation" FOREIGN KEY ("operation_id") REFERENCES "operations"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "events" DROP CONSTRAINT "fk_events_operation"`);
    await queryRunner.query(`ALTER TABLE "events" DROP CONSTRAINT "fk_events_agent"`);
    await queryRunner.query(`ALTER TABLE "operations" DROP CONSTRAINT "fk_operations_provisioning_job"`);
    await queryRunner.query(`ALTER TABLE "operations" DROP CONSTRAINT "fk_operations_agent"`);
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" DROP CONSTRAINT "fk_provisioning_jobs_instance"`);
    await queryRunner.query(`ALTER TABLE "provisioning_jobs" DROP CONSTRAINT "fk_provisioning_jobs_agent"`);
    await queryRunner.query(`ALTER TABLE "instances" DROP CONSTRAINT "fk_instances_agent"`);
    await queryRunner.query(`DROP INDEX "idx_events_agent_at"`);
    await queryRunner.query(`DROP INDEX "idx_events_entity"`);
    await queryRunner.query(`DROP TABLE "events"`);
    await queryRunner.query(`DROP TYPE "event_entity_type"`);
    await queryRunner.query(`DROP INDEX "uq_operations_idempotency_key"`);
    await queryRunner.query(`DROP INDEX "idx_operations_agent_requested"`);
    await queryRunner.query(`DROP INDEX "idx_operations_provisioning_job"`);
    await queryRunner.query(`DROP TABLE "operations"`);
    await queryRunner.query(`DROP TYPE "operation_status"`);
    await queryRunner.query(`DROP TYPE "operation_type"`);
    await queryRunner.query(`DROP INDEX "idx_provisioning_jobs_agent"`);
    await queryRunner.query(`DROP INDEX "idx_provisioning_jobs_instance"`);
    await queryRunner.query(`DROP TABLE "provisioning_jobs"`);
    await queryRunner.query(`DROP TYPE "provisioning_job_status"`);
    await queryRunner.query(`DROP INDEX "uq_instances_live_agent"`);
    await queryRunner.query(`DROP INDEX "idx_instances_agent_created"`);
    await queryRunner.query(`DROP INDEX "idx_instances_server_id"`);
    await queryRunner.query(`DROP TABLE "instances"`);
    await queryRunner.query(`DROP TYPE "instance_status"`);
    await queryRunner.query(`DROP TABLE "agents"`);
    await queryRunner.query(`DROP TYPE "agent_status"`);
  }
}
