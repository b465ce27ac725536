import { In, Not, type DataSource, type ObjectLiteral } from 'typeorm';
import { Instance, ProvisioningJob, type InstanceStatus, LIVE_INSTANCE_STATUSES, type PlacementRefusal, TERMINAL_INSTANCE_STATUSES } from '../entities';
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

  /**
   * Where the next create of the instance goes (project, location, type), recorded before the create
   * so a retried job looks in that project. Only while no server is recorded and the instance is
   * being provisioned or woken; false otherwise (the instance moved on: the caller must not create).
   */
  async choosePlacement(id: string, place: { project: string; location: string; serverType: string }, db: Db = this.dataSource): Promise<boolean> {
    if (!isUuid(id)) return false;
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    const rows: ObjectLiteral[] = await manager.query(
      returningRows(`UPDATE ${table} SET "hetzner_project" = $2, "location" = $3, "server_type" = $4, "updated_at" = now()
       WHERE "id" = $1 AND "server_id" IS NULL AND "status"::text = ANY($5::text[]) RETURNING "id"`),
      [id, place.project, place.location, place.serverType, ['pending', 'provisioning', 'waking']],
    );
    return rows.length === 1;
  }

  /** Adds a refused create to the instance's record (the newest 20 are kept). */
  async addPlacementRefusal(id: string, refusal: PlacementRefusal, db: Db = this.dataSource): Promise<void> {
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    await manager.query(
      `UPDATE ${table} SET "placement_refusals" = (
         SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb) FROM (
           SELECT e, n FROM jsonb_array_elements("placement_refusals" || jsonb_build_array($2::jsonb)) WITH ORDINALITY AS x(e, n)
           ORDER BY n DESC LIMIT 20) kept)
       WHERE "id" = $1`,
      [id, JSON.stringify(refusal)],
    );
  }

  /** Instances holding (or being given) a server, per Hetzner project: what a project's server limit is measured against. */
  async countServersByProject(db: Db = this.dataSource): Promise<Map<string, number>> {
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    const rows: { project: string; n: number }[] = await manager.query(
      `SELECT "hetzner_project" AS project, count(*)::int AS n FROM ${table}
       WHERE "hetzner_project" IS NOT NULL AND ("server_id" IS NOT NULL OR "status"::text = ANY($1::text[])) AND NOT ("status"::text = ANY($2::text[]))
       GROUP BY 1`,
      [['provisioning', 'waking'], [...TERMINAL_INSTANCE_STATUSES]],
    );
    return new Map(rows.map((r) => [r.project, r.n]));
  }

  /**
   * The Hetzner project an operation's instance lives in: the instance's, the provisioning job's
   * instance's, or the agent's newest instance's. Null when nothing was created yet.
   */
  async projectOf(ref: { instanceId?: string; provisioningJobId?: string; agentId?: string }, db: Db = this.dataSource): Promise<string | null> {
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    let rows: { project: string | null }[] = [];
    if (ref.instanceId && isUuid(ref.instanceId)) {
      rows = await manager.query(`SELECT "hetzner_project" AS project FROM ${table} WHERE "id" = $1`, [ref.instanceId]);
    } else if (ref.provisioningJobId && isUuid(ref.provisioningJobId)) {
      rows = await manager.query(
        `SELECT i."hetzner_project" AS project FROM ${table} i JOIN ${quotedTable(manager.connection.getMetadata(ProvisioningJob))} j ON j."instance_id" = i."id" WHERE j."id" = $1`,
        [ref.provisioningJobId],
      );
    } else if (ref.agentId && isUuid(ref.agentId)) {
      rows = await manager.query(
        `SELECT "hetzner_project" AS project FROM ${table} WHERE "agent_id" = $1 ORDER BY "created_at" DESC, "id" DESC LIMIT 1`,
        [ref.agentId],
      );
    }
    return rows[0]?.project ?? null;
  }

  /** Refused creates since `since`, per project and error code (of every instance, rolled-back ones too). */
  async placementRefusalsSince(since: Date, db: Db = this.dataSource): Promise<{ project: string; code: string; n: number }[]> {
    const manager = managerOf(db);
    const table = quotedTable(manager.connection.getMetadata(Instance));
    return manager.query(
      `SELECT r->>'project' AS project, r->>'code' AS code, count(*)::int AS n
       FROM ${table} i CROSS JOIN LATERAL jsonb_array_elements(i."placement_refusals") r
       WHERE i."updated_at" >= $1 AND (r->>'at')::timestamptz >= $1
       GROUP BY 1, 2 ORDER BY 1, 2`,
      [since],
    );
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
