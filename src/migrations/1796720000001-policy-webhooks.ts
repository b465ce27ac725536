import type { MigrationInterface, QueryRunner } from 'typeorm';

// The events trigger, as the events-read-not-notified migration left it, and: an agent's expiry
// warning (an event to 'expiring') is the webhook `agent.expiring`; an expiry extended (to
// 'extended') is audited without a webhook; an operation's webhook carries the reason tailfleet
// asked for it (`requestReason`: "idle 30 min since …", "expired").
const BODY = (policies: boolean) => `
CREATE OR REPLACE FUNCTION "tailfleet_event_written"() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  kind text;
  body jsonb;
BEGIN
  IF NEW.entity_type = 'operation' AND NEW.to_status IN ('succeeded', 'failed', 'cancelled') THEN
    kind := 'operation.' || NEW.to_status;
    SELECT jsonb_build_object('operation', jsonb_build_object(
        'id', o.id, 'type', o.type, 'status', NEW.to_status, 'agentId', o.agent_id, 'error', o.error,
        'failedStep', o.failed_step, 'requestedBy', o.requested_by, 'requestedAt', o.requested_at,
        'finishedAt', o.finished_at${policies ? ", 'requestReason', o.reason" : ''}))
      INTO body FROM operations o WHERE o.id = NEW.entity_id;
${
  policies
    ? `  ELSIF NEW.entity_type = 'agent' AND NEW.to_status = 'expiring' THEN
    kind := 'agent.expiring';
    SELECT jsonb_build_object('agent', jsonb_build_object('id', a.id, 'name', a.name, 'status', a.status, 'expiresAt', a.expiry_warned_for))
      INTO body FROM agents a WHERE a.id = NEW.entity_id;
  ELSIF NEW.entity_type = 'agent' AND NEW.to_status = 'extended' THEN
    RETURN NULL;
`
    : ''
}  ELSIF NEW.entity_type = 'agent' THEN
    kind := 'agent.status_changed';
    SELECT jsonb_build_object('agent', jsonb_build_object('id', a.id, 'name', a.name, 'status', NEW.to_status))
      INTO body FROM agents a WHERE a.id = NEW.entity_id;
  ELSIF NEW.entity_type::text = 'finding' AND NEW.to_status = 'resolved' THEN
    kind := 'finding.resolved';
    SELECT jsonb_build_object('finding', jsonb_build_object(
        'id', f.id, 'resourceType', f.resource_type, 'resourceId', f.resource_id, 'resourceName', f.resource_name,
        'action', f.action, 'agentId', f.agent_id, 'resolution', f.resolution, 'resolvedBy', f.resolved_by,
        'resolvedAt', f.resolved_at))
      INTO body FROM ownership_findings f WHERE f.id = NEW.entity_id;
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

export class PolicyWebhooks1796720000001 implements MigrationInterface {
  name = 'PolicyWebhooks1796720000001';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(BODY(true));
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(BODY(false));
  }
}
