import type { DataSource } from 'typeorm';
import { AGENT_LABEL, INSTANCE_LABEL, MANAGED_LABEL } from '../../src/fleet/server-labels';
import type { SimState } from '../../src/simulator';

/**
 * What must hold once the fleet has settled, checked against the database and the simulator's own
 * state (not through tailfleet's clients). Each check counts what it looked at, so the summary says
 * how much was verified, and lists every violation rather than stopping at the first.
 */

export interface InvariantReport {
  checked: Record<string, number>;
  violations: string[];
}

interface InstanceRow {
  id: string;
  agent_id: string;
  status: string;
  server_id: string | null;
  tailscale_device_id: string | null;
  tailscale_hostname: string | null;
  agent_status: string;
}

const FINAL_OPERATION = new Set(['succeeded', 'failed', 'cancelled']);
const AGENT_FOR_INSTANCE: Record<string, string> = { running: 'active', stopped: 'paused', hibernated: 'hibernated', destroyed: 'destroyed', failed: 'error' };

/** How the ledger words the claim of an operation that had failed: an operator retrying its job by hand. */
const OPERATOR_RETRY = /^retried by an operator/;

/**
 * A final state is final: no operation ends twice. Every move of an operation writes an event row
 * (entity_type 'operation'), in the order of its id; an operation whose events reach succeeded,
 * failed or cancelled again after it ended had its outcome overturned after it was announced (a
 * webhook sent, a rollback started, a client told). The one way back out of `failed` is an operator
 * retrying the job by hand, recorded as its own event ("retried by an operator …"); any other path
 * from one final event to another (final → running → final) is a violation. Where nobody retries by
 * hand (`operatorRetries` false, as in the chaos run), an operator retry is itself one: it can only be
 * a redelivery that the ledger took for one. The row's status must also be where its last event left it.
 */
export async function checkFinalOutcomes(ds: DataSource, opts: { operatorRetries?: boolean } = {}): Promise<InvariantReport> {
  const checked: Record<string, number> = {};
  const violations: string[] = [];
  const events: { operation_id: string; event_id: string; from_status: string | null; to_status: string; reason: string }[] = await ds.query(
    `SELECT entity_id AS operation_id, id::text AS event_id, from_status, to_status, reason
       FROM events WHERE entity_type = 'operation' ORDER BY entity_id, id`,
  );
  const byOperation = new Map<string, typeof events>();
  for (const e of events) {
    const list = byOperation.get(e.operation_id) ?? [];
    list.push(e);
    byOperation.set(e.operation_id, list);
  }
  const describe = (list: typeof events) => list.map((e) => `${e.to_status} (#${e.event_id} "${e.reason.slice(0, 120)}")`).join(' → ');
  const statuses: { id: string; type: string; status: string }[] = await ds.query(`SELECT id, type::text, status::text FROM operations`);
  for (const op of statuses) {
    const list = byOperation.get(op.id) ?? [];
    checked['operation ended once'] = (checked['operation ended once'] ?? 0) + 1;
    // Index of the final event that stands (not followed by an operator retry), if any.
    let ended = -1;
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      if (e.from_status === 'failed' && OPERATOR_RETRY.test(e.reason)) {
        if (!opts.operatorRetries) violations.push(`operation ${op.id} (${op.type}) was retried as if by an operator, and nobody did: ${describe(list)}`);
        ended = -1;
      } else if (FINAL_OPERATION.has(e.to_status)) {
        if (ended >= 0) violations.push(`operation ${op.id} (${op.type}) ended again after it ended: ${describe(list.slice(ended, i + 1))}`);
        ended = i;
      }
    }
    checked['operation row matches its last event'] = (checked['operation row matches its last event'] ?? 0) + 1;
    const last = list[list.length - 1];
    if (!last) violations.push(`operation ${op.id} (${op.type}) has no events`);
    else if (last.to_status !== op.status) violations.push(`operation ${op.id} (${op.type}) is ${op.status} but its last event says ${last.to_status}`);
  }
  return { checked, violations };
}

/** A webhook delivery as the receiver got it (its body's fields, and the delivery id from `webhook-id`). */
export interface ReceivedWebhook {
  deliveryId: string;
  type: string;
  eventId: string;
  operationId: string | null;
  status: string | null;
}

/**
 * What the webhooks said about each operation's end, as recorded (webhook_deliveries, written by the
 * events trigger in the transition's own transaction) and as received: one outcome per operation, never
 * `operation.failed` and later `operation.succeeded` (a receiver that acted on the failure — paged
 * someone, cleaned up — was told something that did not stay true). Only for a run where nobody
 * retries a failed job by hand, which announces its new outcome too. Every final event of an operation
 * has exactly one delivery per subscription, and the receiver got nothing that was not recorded.
 */
export async function checkWebhookOutcomes(ds: DataSource, received: readonly ReceivedWebhook[]): Promise<InvariantReport> {
  const checked: Record<string, number> = {};
  const violations: string[] = [];
  const count = (name: string) => {
    checked[name] = (checked[name] ?? 0) + 1;
  };
  const recorded: { id: string; subscription_id: string; type: string; event_id: string; operation_id: string | null; status: string | null }[] =
    await ds.query(
      `SELECT id, subscription_id, type, event_id::text AS event_id, data->'operation'->>'id' AS operation_id, data->'operation'->>'status' AS status
         FROM webhook_deliveries WHERE type LIKE 'operation.%' ORDER BY event_id, id`,
    );
  const subscriptions: { id: string }[] = await ds.query(
    `SELECT id FROM webhook_subscriptions WHERE events && ARRAY['operation.succeeded', 'operation.failed', 'operation.cancelled']`,
  );
  const finalEvents: { event_id: string; operation_id: string; to_status: string }[] = await ds.query(
    `SELECT id::text AS event_id, entity_id AS operation_id, to_status FROM events
      WHERE entity_type = 'operation' AND to_status IN ('succeeded', 'failed', 'cancelled')`,
  );
  const deliveriesOf = new Map<string, typeof recorded>();
  for (const d of recorded) {
    const list = deliveriesOf.get(d.event_id) ?? [];
    list.push(d);
    deliveriesOf.set(d.event_id, list);
  }
  for (const e of finalEvents) {
    count('final event announced once per subscription');
    const list = deliveriesOf.get(e.event_id) ?? [];
    for (const s of subscriptions) {
      const n = list.filter((d) => d.subscription_id === s.id).length;
      if (n !== 1) violations.push(`final event #${e.event_id} (operation ${e.operation_id} ${e.to_status}) has ${n} deliveries to subscription ${s.id}`);
    }
  }

  // Per operation, the outcomes announced in event order: more than one means one was taken back.
  const outcomes = (items: readonly { operationId: string | null; type: string; eventId: string }[], where: string) => {
    const byOperation = new Map<string, Map<string, string>>();
    for (const d of items) {
      if (!d.operationId) continue;
      const events = byOperation.get(d.operationId) ?? new Map<string, string>();
      events.set(d.eventId, d.type);
      byOperation.set(d.operationId, events);
    }
    for (const [operationId, events] of byOperation) {
      count(`one outcome per operation (${where})`);
      const story = [...events].sort(([a], [b]) => Number(a) - Number(b)).map(([, type]) => type);
      if (story.length <= 1) continue;
      const firstFailed = story.indexOf('operation.failed');
      const failedThenSucceeded = firstFailed >= 0 && story.lastIndexOf('operation.succeeded') > firstFailed;
      violations.push(
        `operation ${operationId}: ${where} webhooks announced ${story.join(' then ')}${failedThenSucceeded ? ' (failed, then succeeded)' : ''}`,
      );
    }
  };
  outcomes(recorded.map((d) => ({ operationId: d.operation_id, type: d.type, eventId: d.event_id })), 'recorded');
  outcomes(received, 'received');

  const recordedById = new Map(recorded.map((d) => [d.id, d]));
  for (const r of received) {
    count('received webhook was recorded');
    const d = recordedById.get(r.deliveryId);
    if (!d) violations.push(`received webhook ${r.deliveryId} (${r.type}) is not a recorded delivery`);
    else if (d.type !== r.type || d.event_id !== r.eventId) {
      violations.push(`received webhook ${r.deliveryId} says ${r.type} #${r.eventId}, recorded as ${d.type} #${d.event_id}`);
    }
    if (r.status !== null && `operation.${r.status}` !== r.type) violations.push(`received webhook ${r.deliveryId} is ${r.type} for a ${r.status} operation`);
  }
  return { checked, violations };
}

export async function checkInvariants(ds: DataSource, sim: SimState, accepted: Map<string, string>): Promise<InvariantReport> {
  const checked: Record<string, number> = {};
  const violations: string[] = [];
  const count = (name: string, n = 1) => {
    checked[name] = (checked[name] ?? 0) + n;
  };
  const fail = (msg: string) => violations.push(msg);

  // 1. Every operation is final, and a failed one says why.
  const ops: { id: string; type: string; status: string; error: string | null; provisioning_job_id: string | null; idempotency_key: string | null }[] =
    await ds.query(`SELECT id, type, status, error, provisioning_job_id, idempotency_key FROM operations`);
  const opById = new Map(ops.map((o) => [o.id, o]));
  for (const op of ops) {
    count('operation final');
    if (!FINAL_OPERATION.has(op.status)) fail(`operation ${op.id} (${op.type}) is still ${op.status}`);
    if (op.status === 'failed' && !op.error) fail(`operation ${op.id} (${op.type}) failed without a reason`);
  }

  // 2. Nothing lost: every operation the API accepted (2xx) is in the database and finished.
  for (const [id, what] of accepted) {
    count('accepted operation recorded');
    const op = opById.get(id);
    if (!op) fail(`accepted operation ${id} (${what}) is not in the database`);
    else if (!FINAL_OPERATION.has(op.status)) fail(`accepted operation ${id} (${what}) is ${op.status}`);
  }

  // 3. Every provision ended: succeeded, or failed and rolled back exactly once.
  const jobs: { id: string; status: string; instance_id: string }[] = await ds.query(`SELECT id, status, instance_id FROM provisioning_jobs`);
  const rollbacksByJob = new Map<string, typeof ops>();
  for (const op of ops.filter((o) => o.type === 'rollback')) {
    const list = rollbacksByJob.get(op.provisioning_job_id ?? '') ?? [];
    list.push(op);
    rollbacksByJob.set(op.provisioning_job_id ?? '', list);
  }
  for (const job of jobs) {
    count('provisioning job settled');
    const rollbacks = rollbacksByJob.get(job.id) ?? [];
    if (job.status === 'succeeded') {
      if (rollbacks.length > 0) fail(`provisioning job ${job.id} succeeded but has ${rollbacks.length} rollback operation(s)`);
    } else if (job.status === 'rolled_back') {
      count('rollback exactly once');
      if (rollbacks.length !== 1) fail(`provisioning job ${job.id} has ${rollbacks.length} rollback operations`);
      else if (rollbacks[0]!.status !== 'succeeded') fail(`rollback of job ${job.id} is ${rollbacks[0]!.status}`);
      else if (rollbacks[0]!.idempotency_key !== `rollback:${job.id}`) fail(`rollback of job ${job.id} has key ${rollbacks[0]!.idempotency_key}`);
    } else {
      fail(`provisioning job ${job.id} is ${job.status} (not succeeded, not rolled back)`);
    }
  }

  // 4. Every instance matches the cloud, and its agent matches the instance.
  const instances: InstanceRow[] = await ds.query(
    `SELECT i.id, i.agent_id, i.status, i.server_id, i.tailscale_device_id, i.tailscale_hostname, a.status AS agent_status
       FROM instances i JOIN agents a ON a.id = i.agent_id`,
  );
  const servers = new Map(sim.servers.map((s) => [String(s.id), s]));
  const devices = new Map(sim.devices.map((d) => [d.id, d]));
  const ownedServers = new Set<string>();
  const ownedDevices = new Set<string>();
  const ownedImages = new Set<number>();
  const snapshotsOf = (inst: InstanceRow) => sim.images.filter((i) => i.type === 'snapshot' && i.labels[INSTANCE_LABEL] === inst.id);
  for (const inst of instances) {
    count('instance matches the cloud');
    const where = `instance ${inst.id} (agent ${inst.agent_id}) is ${inst.status}`;
    const server = inst.server_id ? servers.get(inst.server_id) : undefined;
    const device = inst.tailscale_device_id ? devices.get(inst.tailscale_device_id) : undefined;
    const expectedAgent = AGENT_FOR_INSTANCE[inst.status];
    if (expectedAgent && inst.agent_status !== expectedAgent) fail(`${where} but its agent is ${inst.agent_status}`);
    switch (inst.status) {
      case 'running':
      case 'stopped': {
        const want = inst.status === 'running' ? 'running' : 'off';
        if (!server) fail(`${where} but server ${inst.server_id} does not exist`);
        else if (server.status !== want) fail(`${where} but server ${inst.server_id} is ${server.status}`);
        if (!device) fail(`${where} but device ${inst.tailscale_device_id} is not in the tailnet`);
        if (server) ownedServers.add(String(server.id));
        if (device) ownedDevices.add(device.id);
        const left = snapshotsOf(inst);
        if (left.length > 0) fail(`${where} but snapshots ${left.map((i) => i.id).join(', ')} of it are still kept (billed)`);
        break;
      }
      case 'hibernated': {
        // No server (that is the point), the tailnet device kept, exactly one available snapshot.
        const labelled = sim.servers.filter((s) => s.labels[INSTANCE_LABEL] === inst.id);
        if (labelled.length > 0) fail(`${where} but servers ${labelled.map((s) => s.id).join(', ')} still exist`);
        if (!device) fail(`${where} but device ${inst.tailscale_device_id} is not in the tailnet`);
        else ownedDevices.add(device.id);
        const snapshots = snapshotsOf(inst);
        count('hibernated agent has one snapshot');
        if (snapshots.length !== 1) fail(`${where} with ${snapshots.length} snapshots`);
        else if (snapshots[0]!.status !== 'available') fail(`${where} but its snapshot ${snapshots[0]!.id} is ${snapshots[0]!.status}`);
        for (const i of snapshots) ownedImages.add(i.id);
        break;
      }
      case 'destroyed':
      case 'failed': {
        if (server) fail(`${where} but server ${server.id} still exists (${server.status})`);
        const labelled = sim.servers.filter((s) => s.labels[INSTANCE_LABEL] === inst.id);
        if (labelled.length > 0) fail(`${where} but servers ${labelled.map((s) => s.id).join(', ')} carry its label`);
        if (device) fail(`${where} but device ${device.id} is still in the tailnet`);
        const named = inst.tailscale_hostname ? sim.devices.filter((d) => d.hostname === inst.tailscale_hostname) : [];
        if (named.length > 0) fail(`${where} but devices ${named.map((d) => d.id).join(', ')} use its hostname`);
        const snapshots = snapshotsOf(inst);
        if (snapshots.length > 0) fail(`${where} but snapshots ${snapshots.map((i) => i.id).join(', ')} of it are still kept (billed)`);
        break;
      }
      default:
        fail(`${where}: not settled`);
    }
  }

  // 5. No orphans: every server and device belongs to a running or stopped instance.
  for (const s of sim.servers) {
    count('server owned');
    if (!ownedServers.has(String(s.id))) {
      fail(`orphan server ${s.id} (${s.name}, ${s.status}, agent ${s.labels[AGENT_LABEL] ?? '-'}, managed=${s.labels[MANAGED_LABEL.key] ?? '-'})`);
    }
  }
  for (const d of sim.devices) {
    count('device owned');
    if (!ownedDevices.has(d.id)) fail(`orphan device ${d.id} (${d.hostname})`);
  }
  for (const i of sim.images.filter((image) => image.type === 'snapshot')) {
    count('snapshot owned');
    if (!ownedImages.has(i.id)) fail(`orphan snapshot ${i.id} (agent ${i.labels[AGENT_LABEL] ?? '-'}, ${i.status})`);
  }

  // 5b. Nothing of a live agent was ever deleted: every guarded delete in the audit names a resource
  // that no live instance holds at the end, and no delete was refused (nobody changed labels or tags).
  const liveIds = new Set(
    instances
      .filter((i) => ['running', 'stopped', 'hibernated'].includes(i.status))
      .flatMap((i) => [i.server_id, i.tailscale_device_id].filter((x): x is string => !!x)),
  );
  const deletes: { to_status: string; reason: string }[] = await ds.query(
    `SELECT to_status, reason FROM events WHERE to_status IN ('server_deleted', 'device_deleted')`,
  );
  for (const e of deletes) {
    count('delete was not of a live agent');
    const id = /\b(?:server|device) (\S+)/.exec(e.reason)?.[1];
    if (!id) fail(`delete event without a resource id: ${e.reason}`);
    else if (liveIds.has(id)) fail(`a live agent's resource was deleted: ${e.reason}`);
  }
  const refused: { reason: string }[] = await ds.query(`SELECT reason FROM events WHERE to_status = 'needs_attention'`);
  count('no delete refused for lack of evidence', refused.length || 1);
  for (const e of refused) fail(`ownership guard refused a call nobody provoked: ${e.reason}`);

  // 6. No agent with two servers, and at most one live instance per agent.
  const serversPerAgent = new Map<string, number>();
  for (const s of sim.servers) {
    const agent = s.labels[AGENT_LABEL] ?? `(unlabelled ${s.id})`;
    serversPerAgent.set(agent, (serversPerAgent.get(agent) ?? 0) + 1);
  }
  const agents: { id: string }[] = await ds.query(`SELECT id FROM agents`);
  for (const { id } of agents) {
    count('agent has at most one server');
    const n = serversPerAgent.get(id) ?? 0;
    if (n > 1) fail(`agent ${id} has ${n} servers`);
  }
  const live: { agent_id: string; n: string }[] = await ds.query(
    `SELECT agent_id, count(*) AS n FROM instances WHERE status NOT IN ('destroyed', 'failed') GROUP BY agent_id HAVING count(*) > 1`,
  );
  for (const row of live) fail(`agent ${row.agent_id} has ${row.n} live instances`);

  await checkAuthKeysRecorded(ds, sim, { checked, violations });
  return { checked, violations };
}

/**
 * 7. No live auth key that no provisioning job records: a key that can still join a machine must be
 * one tailfleet knows of, or nothing will ever revoke it (a create whose answer was lost, a crash
 * between the create and its record).
 */
export async function checkAuthKeysRecorded(ds: DataSource, sim: SimState, report: InvariantReport): Promise<void> {
  const jobs: { auth_key_ids: string[] }[] = await ds.query(`SELECT auth_key_ids FROM provisioning_jobs`);
  const recorded = new Set(jobs.flatMap((j) => j.auth_key_ids));
  for (const key of sim.authKeys) {
    report.checked['no live auth key unrecorded'] = (report.checked['no live auth key unrecorded'] ?? 0) + 1;
    if (!key.invalid && !recorded.has(key.id)) {
      report.violations.push(`live auth key ${key.id} ("${key.description}") is recorded by no provisioning job`);
    }
  }
}
