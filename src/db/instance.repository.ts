import type { DataSource, ObjectLiteral } from 'typeorm';
import { Instance, type InstanceStatus, TERMINAL_INSTANCE_STATUSES } from '../entities';
import { GuardedUpdateConflictError, RecordNotFoundError, ServerIdConflictError } from './errors';
import { type Db, hydrate, managerOf, quotedTable, returningRows } from './transitions';
import { isUuid } from './uuid';

export interface ServerDetails {
  /** Hetzner server id as a decimal string (int64: never round-trip it through a JS number). */
  serverId: string;
  serverName?: string | null;
  serverIp?: string | null;
}

export interface DeviceDetails {
  tailscaleDeviceId: string;
  tailscaleIp: string | null;
  tailscaleHostname?: string | null;
}

// Statuses in which the provision step that creates the server can run.
const SERVER_ASSIGNABLE: readonly InstanceStatus[] = ['pending', 'provisioning'];

export class InstanceRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  async findById(id: string, db: Db = this.dataSource): Promise<Instance | null> {
    if (!isUuid(id)) return null;
    return managerOf(db).findOne(Instance, { where: { id } });
  }

  /**
   * The agent's one live instance (not destroyed/failed), or null. Read by every stop and start, so
   * it is plain SQL rather than a find() that builds the same query through TypeORM's query builder.
   */
  async findLiveByAgent(agentId: string, db: Db = this.dataSource): Promise<Instance | null> {
    if (!isUuid(agentId)) return null;
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    const rows: ObjectLiteral[] = await manager.query(
      `SELECT * FROM ${table} WHERE "agent_id" = $1 AND NOT ("status"::text = ANY($2::text[]))
       ORDER BY "created_at" DESC, "id" DESC LIMIT 1`,
      [agentId, [...TERMINAL_INSTANCE_STATUSES]],
    );
    return rows.length === 0 ? null : hydrate(manager, Instance, rows[0]!);
  }

  /** The agent's newest instance in any status (after a rollback or destroy the live one is gone). */
  async findLatestByAgent(agentId: string, db: Db = this.dataSource): Promise<Instance | null> {
    if (!isUuid(agentId)) return null;
    return managerOf(db).findOne(Instance, { where: { agentId }, order: { createdAt: 'DESC', id: 'DESC' } });
  }

  async listByAgent(agentId: string, db: Db = this.dataSource): Promise<Instance[]> {
    if (!isUuid(agentId)) return [];
    return managerOf(db).find(Instance, { where: { agentId }, order: { createdAt: 'DESC', id: 'DESC' } });
  }

  findByServerId(serverId: string, db: Db = this.dataSource): Promise<Instance[]> {
    return managerOf(db).find(Instance, { where: { serverId }, order: { createdAt: 'DESC' } });
  }

  /**
   * Records the server right after the create call, before waiting for anything, so a rollback
   * always knows what to delete. Guarded: only while pending/provisioning, and only if no other
   * server is recorded (recording the same id again is a no-op success, for retried steps).
   * Throws ServerIdConflictError otherwise, RecordNotFoundError for an unknown instance.
   */
  async setServer(id: string, server: ServerDetails, db: Db = this.dataSource): Promise<Instance> {
    if (!isUuid(id)) throw new RecordNotFoundError('instance', id);
    if (!/^[1-9][0-9]{0,18}$/.test(server.serverId)) {
      throw new TypeError(`serverId must be a positive decimal integer string, got ${JSON.stringify(server.serverId)}`);
    }
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    const params: unknown[] = [id, server.serverId, [...SERVER_ASSIGNABLE]];
    const sets = [`"server_id" = $2`, `"updated_at" = now()`];
    if (server.serverName !== undefined) sets.push(`"server_name" = $${params.push(server.serverName)}`);
    if (server.serverIp !== undefined) sets.push(`"server_ip" = $${params.push(server.serverIp)}`);
    const rows: ObjectLiteral[] = await manager.query(
      returningRows(`UPDATE ${table} SET ${sets.join(', ')}
       WHERE "id" = $1 AND "status"::text = ANY($3::text[]) AND ("server_id" IS NULL OR "server_id" = $2)
       RETURNING *`),
      params,
    );
    if (rows.length === 1) return hydrate(manager, Instance, rows[0]!);
    const current = await manager.findOne(Instance, { where: { id } });
    if (!current) throw new RecordNotFoundError('instance', id);
    throw new ServerIdConflictError(id, server.serverId, current.serverId, current.status);
  }

  /** Records the enrolled tailnet device. Guarded: the instance must still be live. */
  async setDevice(id: string, device: DeviceDetails, db: Db = this.dataSource): Promise<Instance> {
    if (!isUuid(id)) throw new RecordNotFoundError('instance', id);
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    const params: unknown[] = [id, [...TERMINAL_INSTANCE_STATUSES], device.tailscaleDeviceId, device.tailscaleIp];
    const sets = [`"tailscale_device_id" = $3`, `"tailscale_ip" = $4`, `"updated_at" = now()`];
    if (device.tailscaleHostname !== undefined) {
      sets.push(`"tailscale_hostname" = $${params.push(device.tailscaleHostname)}`);
    }
    const rows: ObjectLiteral[] = await manager.query(
      returningRows(`UPDATE ${table} SET ${sets.join(', ')}
       WHERE "id" = $1 AND NOT ("status"::text = ANY($2::text[]))
       RETURNING *`),
      params,
    );
    if (rows.length === 1) return hydrate(manager, Instance, rows[0]!);
    const current = await manager.findOne(Instance, { where: { id } });
    if (!current) throw new RecordNotFoundError('instance', id);
    throw new GuardedUpdateConflictError('instance', id, 'record a tailnet device', current.status);
  }
}
