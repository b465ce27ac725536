import { Fleet } from '../../src/fleet/fleet';
import { MANAGED_LABEL } from '../../src/fleet/server-labels';
import type { BenchStack } from './stack';

/**
 * `n` active agents with a running server each, written straight into the simulator and PostgreSQL
 * (seconds instead of minutes of provisioning): what a fleet looks like after its provisions. Each
 * server carries the fleet's labels and each agent a running instance pointing at its server.
 * Returns the agent ids.
 */
export async function seedRunningAgents(stack: BenchStack, n: number, namePrefix: string): Promise<string[]> {
  const labels = { [MANAGED_LABEL.key]: MANAGED_LABEL.value, ...new Fleet(stack.config.fleetName).labels() };
  const names: string[] = [];
  const serverIds: number[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${namePrefix}-${i}`;
    names.push(name);
    serverIds.push(stack.sim.control.createServer({ name, status: 'running', labels }).id);
  }
  const rows: Array<{ agent_id: string }> = await stack.tf.dataSource.query(
    `WITH a AS (
       INSERT INTO agents (name, status)
       SELECT h, 'active' FROM unnest($1::text[]) AS h
       RETURNING id, name
     )
     INSERT INTO instances (agent_id, server_id, server_name, location, server_type, image, status, started_at)
     SELECT a.id, f.server_id, f.h, 'fsn1', 'cx22', 'ubuntu-24.04', 'running', now()
       FROM unnest($1::text[], $2::bigint[]) AS f(h, server_id)
       JOIN a ON a.name = f.h
     RETURNING agent_id`,
    [names, serverIds],
  );
  if (rows.length !== n) throw new Error(`seeded ${rows.length} of ${n} agents`);
  return rows.map((r) => r.agent_id);
}
