import { In, Not, type DataSource, type ObjectLiteral } from 'typeorm';
import { Instance, type InstanceStatus, LIVE_INSTANCE_STATUSES, TERMINAL_INSTANCE_STATUSES } from '../entities';
import { GuardedUpdateConflictError, RecordNotFoundError, ServerIdConflictError } from './errors';
import { type Db, hydrate, inTransaction, managerOf, quotedTable, recordEvent, returningRows } from './transitions';
import { isUuid } from './uuid';

export interface ServerDetails {
  /** Hetzner server id as a decimal string (int64: never round-trip it through a JS number). */
  serverId: string;
  serverName?: string | null;
  serverIp?: string | null;
}

/** A device change without a status change (the reconciler's repair of a lost or replaced device). */
export interface DevicePatch {
  tailscaleDeviceId: string | null;
  tailscaleIp: string | null;
  error: string | null;
}

export interface DeviceDetails {
  tailscaleDeviceId: string;
  tailscaleIp: string | null;
  tailscaleHostname?: string | null;
}

/** What updateWhile may set. */
export type WhilePatch = Partial<
  Pick<Instance, 'serverId' | 'serverIp' | 'snapshotImageId' | 'snapshotSizeGb' | 'tailscaleDeviceId' | 'tailscaleIp' | 'error'>
>;

// Statuses in which the provision step that creates the server can run.
const SERVER_ASSIGNABLE: readonly InstanceStatus[] = ['pending', 'provisioning'];

export class InstanceRepository {
  private readonly dataSource: DataSource;

  constructor(deps: { dataSource: DataSource }) {
    this.dataSource = deps.dataSource;
  }

  /** Per agent: its live instance, else its most recent one (so a destroyed agent still shows what it had). */
  async currentOfAgents(agentIds: string[], db: Db = this.dataSource): Promise<Map<string, Instance>> {
    if (agentIds.length === 0) return new Map();
    const m = managerOf(db);
    const rows: Record<string, unknown>[] = await m.query(
      `SELECT DISTINCT ON ("agent_id") * FROM ${quotedTable(m.connection.getMetadata(Instance))}
       WHERE "agent_id" = ANY($1::uuid[])
       ORDER BY "agent_id", ("status"::text = ANY($2::text[])) DESC, "created_at" DESC, "id" DESC`,
      [agentIds, [...LIVE_INSTANCE_STATUSES]],
    );
    return new Map(rows.map((raw) => [raw.agent_id as string, hydrate(m, Instance, raw)]));
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

  /**
   * Columns learnt during a hibernate or wake (snapshot, server, device), written only while the
   * instance is still in `status`, so a step of a run that lost its instance changes nothing.
   * Throws GuardedUpdateConflictError otherwise.
   */
  async updateWhile(id: string, status: InstanceStatus, patch: WhilePatch, db: Db = this.dataSource): Promise<void> {
    if (!isUuid(id)) throw new RecordNotFoundError('instance', id);
    const result = await managerOf(db).update(Instance, { id, status }, patch);
    if ((result.affected ?? 0) === 1) return;
    const current = await managerOf(db).findOne(Instance, { where: { id }, select: { id: true, status: true } });
    if (!current) throw new RecordNotFoundError('instance', id);
    throw new GuardedUpdateConflictError('instance', id, `record ${Object.keys(patch).join(', ')}`, current.status);
  }

  /** Reads the instance and locks its row until the transaction `db` ends. */
  async findByIdForUpdate(id: string, db: Db): Promise<Instance | null> {
    if (!isUuid(id)) return null;
    return managerOf(db).findOne(Instance, { where: { id }, lock: { mode: 'pessimistic_write' } });
  }

  /** Every instance that is not destroyed or failed, oldest first. */
  listLive(db: Db = this.dataSource): Promise<Instance[]> {
    return managerOf(db).find(Instance, {
      where: { status: Not(In([...TERMINAL_INSTANCE_STATUSES])) },
      order: { createdAt: 'ASC' },
    });
  }

  /** The live instance that has recorded this server, if any (id only). */
  findLiveByServerId(serverId: string, db: Db = this.dataSource): Promise<Pick<Instance, 'id'> | null> {
    return managerOf(db).findOne(Instance, {
      where: { serverId, status: Not(In([...TERMINAL_INSTANCE_STATUSES])) },
      select: { id: true },
    });
  }

  /** The id of a live instance that has recorded this device, or whose hostname or server name is `hostname`. */
  async findLiveIdByDevice(deviceId: string, hostname: string, db: Db = this.dataSource): Promise<string | null> {
    const row = await managerOf(db)
      .createQueryBuilder(Instance, 'i')
      .select('i.id', 'id')
      .where('i.status NOT IN (:...dead)', { dead: [...TERMINAL_INSTANCE_STATUSES] })
      .andWhere('(i.tailscale_device_id = :id OR lower(i.tailscale_hostname) = :h OR lower(i.server_name) = :h)', {
        id: deviceId,
        h: hostname.toLowerCase(),
      })
      .getRawOne<{ id: string }>();
    return row?.id ?? null;
  }

  /** Fixes the names the machine will have (hostname and server name) before any cloud call. */
  async setNames(id: string, names: { tailscaleHostname: string; serverName: string }, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).update(Instance, { id }, names);
  }

  /** Keeps an error message on the instance, only while it is still in `status`. */
  async recordError(id: string, status: InstanceStatus, error: string, db: Db = this.dataSource): Promise<void> {
    await managerOf(db).update(Instance, { id, status }, { error });
  }

  /**
   * Device columns change without a status change, so this is a guarded update (same status, same
   * device as seen) plus an event row in one transaction, the same shape transition() writes.
   * Throws GuardedUpdateConflictError when the instance moved or took another device meanwhile.
   */
  async replaceDevice(
    instance: Pick<Instance, 'id' | 'agentId' | 'status' | 'tailscaleDeviceId'>,
    patch: DevicePatch,
    reason: string,
    db: Db = this.dataSource,
  ): Promise<void> {
    await inTransaction(db, async (manager) => {
      const qb = manager
        .createQueryBuilder()
        .update(Instance)
        .set({ ...patch, updatedAt: () => 'now()' })
        .where('id = :id AND status = :status', { id: instance.id, status: instance.status });
      if (instance.tailscaleDeviceId) qb.andWhere('tailscale_device_id = :device', { device: instance.tailscaleDeviceId });
      else qb.andWhere('tailscale_device_id IS NULL');
      const result = await qb.execute();
      if (result.affected !== 1) {
        const now = await manager.findOne(Instance, { where: { id: instance.id }, select: { id: true, status: true } });
        throw new GuardedUpdateConflictError('instance', instance.id, 'take a tailnet device change', now?.status ?? 'gone');
      }
      await recordEvent(manager, {
        entityType: 'instance',
        entityId: instance.id,
        agentId: instance.agentId,
        fromStatus: instance.status,
        toStatus: instance.status,
        reason,
      });
    });
  }
}
