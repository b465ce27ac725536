import type { MigrationInterface, QueryRunner } from 'typeorm';

// The channel and payload are read by src/events/notifications.ts. The payload stays small (NOTIFY
// allows 8000 bytes): readers fetch the row itself when they need more. An AFTER trigger runs at the
// end of the statement, so the operation row read here already holds the transition's update.
const EVENT_WRITTEN_FUNCTION = `
CREATE FUNCTION "tailfleet_event_written"() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  kind text;
  body jsonb;
BEGIN
  PERFORM pg_notify('tailfleet_events', json_build_object(
    'schema', TG_TABLE_SCHEMA, 'id', NEW.id::text, 'entityType', NEW.entity_type,
    'entityId', NEW.entity_id, 'agentId', NEW.agent_id, 'toStatus', NEW.to_status)::text);

  IF NEW.entity_type = 'operation' AND NEW.to_status IN ('succeeded', 'failed', 'cancelled') THEN
    kind := 'operation.' || NEW.to_status;
    SELECT jsonb_build_object('operation', jsonb_build_object(
        'id', o.id, 'type', o.type, 'status', NEW.to_status, 'agentId', o.agent_id, 'error', o.error,
        'failedStep', o.failed_step, 'requestedBy', o.requested_by, 'requestedAt', o.requested_at,
        'finishedAt', o.finished_at))
      INTO body FROM operations o WHERE o.id = NEW.entity_id;
  ELSIF NEW.entity_type = 'agent' THEN
    kind := 'agent.status_changed';
    SELECT jsonb_build_object('agent', jsonb_build_object('id', a.id, 'name', a.name, 'status', NEW.to_status))
      INTO body FROM agents a WHERE a.id = NEW.entity_id;
  ELSE
    RETURN NULL;
  END IF;

  body := coalesce(body, '{}'::jsonb) || jsonb_build_object(
    'eventId', NEW.id::text, 'from', NEW.from_status, 'to', NEW.to_status, 'reason', NEW.reason,
    'actor', NEW.actor, 'operationId', NEW.operation_id);
  INSERT INTO webhook_deliveries (subscription_id, event_id, type, data, occurred_at)
    SELECT s.id, NEW.id, kind, body, NEW.at FROM webhook_subscriptions s WHERE kind = ANY (s.events);
  RETURN NULL;
END
$fn$`;

export class Webhooks1796041190446 implements MigrationInterface {
  name = 'Webhooks1796041190446';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE "webhook_subscriptions" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "url" text NOT NULL, "events" text array NOT NULL, "secret" character varying(100) NOT NULL, "created_by" character varying(100) NOT NULL DEFAULT 'system', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_webhook_subscriptions" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE TYPE "webhook_delivery_status" AS ENUM('pending', 'succeeded', 'failed')`);
    await queryRunner.query(`CREATE TABLE "webhook_deliveries" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "subscription_id" uuid NOT NULL, "event_id" bigint NOT NULL, "type" character varying(64) NOT NULL, "data" jsonb NOT NULL, "occurred_at" TIMESTAMP WITH TIME ZONE NOT NULL, "status" "webhook_delivery_status" NOT NULL DEFAULT 'pending', "attempts" integer NOT NULL DEFAULT '0', "attempt_log" jsonb NOT NULL DEFAULT '[]'::jsonb, "queued_at" TIMESTAMP WITH TIME ZONE, "delivered_at" TIMESTAMP WITH TIME ZONE, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "pk_webhook_deliveries" PRIMARY KEY ("id"))`);
    await queryRunner.query(`CREATE INDEX "idx_webhook_deliveries_unqueued" ON "webhook_deliveries" ("created_at") WHERE "status" = 'pending' AND "queued_at" IS NULL`);
    await queryRunner.query(`CREATE INDEX "idx_webhook_deliveries_subscription" ON "webhook_deliveries" ("subscription_id", "created_at")`);
    await queryRunner.query(`ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "fk_webhook_deliveries_subscription" FOREIGN KEY ("subscription_id") REFERENCES "webhook_subscriptions"("id") ON DELETE CASCADE ON UPDATE NO ACTION`);
    // Every event row, however it is written (transition, created row, a future path), announces
    // itself at commit (NOTIFY is transactional) and writes its webhook deliveries in the same
    // transaction: the deliveries are the outbox, committed or rolled back with the event.
    await queryRunner.query(EVENT_WRITTEN_FUNCTION);
    await queryRunner.query(`CREATE TRIGGER "trg_events_written" AFTER INSERT ON "events" FOR EACH ROW EXECUTE FUNCTION "tailfleet_event_written"()`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TRIGGER "trg_events_written" ON "events"`);
    await queryRunner.query(`DROP FUNCTION "tailfleet_event_written"()`);
    await queryRunner.query(`ALTER TABLE "webhook_deliveries" DROP CONSTRAINT "fk_webhook_deliveries_subscription"`);
    await queryRunner.query(`DROP INDEX "idx_webhook_deliveries_subscription"`);
    await queryRunner.query(`DROP INDEX "idx_webhook_deliveries_unqueued"`);
    await queryRunner.query(`DROP TABLE "webhook_deliveries"`);
    await queryRunner.query(`DROP TYPE "webhook_delivery_status"`);
    await queryRunner.query(`DROP TABLE "webhook_subscriptions"`);
  }
}
