import { randomUUID } from 'node:crypto';
import { Fleet } from '../../src/fleet/fleet';
import { AGENT_LABEL, INSTANCE_LABEL, MANAGED_LABEL } from '../../src/fleet/server-labels';
import type { BenchStack } from './stack';

/**
 * `n` active agents with a running server each, written straight into the simulator and PostgreSQL
 * (seconds instead of minutes of provisioning): what a fleet looks like after its provisions. Each
 * server carries the fleet's labels and each agent a running instance pointing at its server.
 * Returns the agent ids.
 */
export async function seedRunningAgents(stack: BenchStack, n: number, namePrefix: string): Promise<string[]> {
  const fleet = new Fleet(stack.config.fleetName);
  const names = Array.from({ length: n }, (_, i) => `${namePrefix}-${i}`);
  // Agents first: each server is labelled for its agent and instance, as a provision labels it, so
  // the ownership guard finds both facts (the recorded id and the labels) before a power-off.
  const agents: Array<{ id: string; name: string }> = await stack.tf.dataSource.query(
    `INSERT INTO agents (name, status) SELECT h, 'active' FROM unnest($1::text[]) AS h RETURNING id, name`,
    [names],
  );
  const instanceIds = agents.map(() => randomUUID());
  const serverIds = agents.map(
    (a, i) =>
      stack.sim.control.createServer({
        name: a.name,
        status: 'running',
        labels: { [MANAGED_LABEL.key]: MANAGED_LABEL.value, ...fleet.labels(), [AGENT_LABEL]: a.id, [INSTANCE_LABEL]: instanceIds[i]! },
      }).id,
  );
  const rows: Array<{ agent_id: string }> = await stack.tf.dataSource.query(
    `INSERT INTO instances (id, agent_id, server_id, server_name, location, server_type, image, status, started_at)
     SELECT f.id, f.agent_id, f.server_id, f.h, 'fsn1', 'cx22', 'ubuntu-24.04', 'running', now()
       FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[]) AS f(id, agent_id, server_id, h)
     RETURNING agent_id`,
    [instanceIds, agents.map((a) => a.id), serverIds, agents.map((a) => a.name)],
  );
  if (rows.length !== n) throw new Error(`seeded ${rows.length} of ${n} agents`);
  return rows.map((r) => r.agent_id);
}
