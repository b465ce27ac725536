import type { MigrationInterface, QueryRunner } from 'typeorm';

// The event trigger of the webhooks migration, with one more kind: an ownership finding resolved
// (an event on the finding itself, entity_type `finding`) becomes a `finding.resolved` delivery.
// The rest is unchanged: every event is announced, operation and agent events are delivered as before.
const eventWrittenFunction = (withFindings: boolean) => `
CREATE OR REPLACE FUNCTION "tailfleet_event_written"() RETURNS trigger LANGUAGE plpgsql AS $fn$
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
      INTO body FROM agents a WHERE a.id = NEW.entity_id;${
  withFindings
    ? `
  ELSIF NEW.entity_type::text = 'finding' AND NEW.to_status = 'resolved' THEN
    kind := 'finding.resolved';
    SELECT jsonb_build_object('finding', jsonb_build_object(
        'id', f.id, 'resourceType', f.resource_type, 'resourceId', f.resource_id, 'resourceName', f.resource_name,
        'action', f.action, 'agentId', f.agent_id, 'resolution', f.resolution, 'resolvedBy', f.resolved_by,
        'resolvedAt', f.resolved_at))
      INTO body FROM ownership_findings f WHERE f.id = NEW.entity_id;`
    : ''
}
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

/** Who resolved a finding, events about findings, and their webhook. */
export class FindingResolutions1796572106392 implements MigrationInterface {
  name = 'FindingResolutions1796572106392';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "ownership_findings" ADD "resolved_by" character varying(128)`);
    // A new enum value; nothing in this transaction uses it (the function compares it as text).
    await queryRunner.query(`ALTER TYPE "event_entity_type" ADD VALUE IF NOT EXISTS 'finding'`);
    await queryRunner.query(eventWrittenFunction(true));
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(eventWrittenFunction(false));
    await queryRunner.query(`DELETE FROM "webhook_deliveries" WHERE "type" = 'finding.resolved'`);
    await queryRunner.query(`UPDATE "webhook_subscriptions" SET "events" = array_remove("events", 'finding.resolved')`);
    await queryRunner.query(`DELETE FROM "events" WHERE "entity_type" = 'finding'`);
    await queryRunner.query(`DROP INDEX "idx_events_entity"`);
    await queryRunner.query(`CREATE TYPE "event_entity_type_old" AS ENUM('agent', 'instance', 'provisioning_job', 'operation')`);
    await queryRunner.query(`ALTER TABLE "events" ALTER COLUMN "entity_type" TYPE "event_entity_type_old" USING "entity_type"::"text"::"event_entity_type_old"`);
    await queryRunner.query(`DROP TYPE "event_entity_type"`);
    await queryRunner.query(`ALTER TYPE "event_entity_type_old" RENAME TO "event_entity_type"`);
    await queryRunner.query(`CREATE INDEX "idx_events_entity" ON "events" USING btree ("entity_type", "entity_id")`);
    await queryRunner.query(`ALTER TABLE "ownership_findings" DROP COLUMN "resolved_by"`);
  }
}
