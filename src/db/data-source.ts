import 'reflect-metadata';
import type { Pool } from 'pg';
import { CannotExecuteNotConnectedError, DataSource, type LoggerOptions } from 'typeorm';
import { entities } from '../entities';
import { migrations } from '../migrations';

export interface DatabaseOptions {
  url: string;
  /** PostgreSQL schema holding every table and type; default: the server's default (public). */
  schema?: string;
  logging?: LoggerOptions;
  /** Size of the pg pool (default 10). Keep it ≥ 2: runMigrations holds one connection for its lock. */
  poolSize?: number;
  /**
   * Connections kept open however long they sit idle (default 0: idle ones close after 10 s). A
   * fresh connection is a cold PostgreSQL backend, slow for its first statements, so a process that
   * answers requests keeps the ones it warmed.
   */
  minConnections?: number;
  applicationName?: string;
  connectTimeoutMs?: number;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Every pooled connection always has an 'error' listener. pg's pool listens only while a connection
 * sits idle in it, TypeORM only while its query runner holds one: a session the server ends at
 * another moment (an administrator's terminate, a restart while the process is starting or
 * draining) would emit an 'error' nobody handles and bring the process down. What such an error
 * means still reaches whoever uses the connection next: its query fails.
 */
function listenForErrors(client: { on(event: 'error', listener: () => void): unknown }): void {
  client.on('error', () => undefined);
}

/**
 * Builds (does not connect) the one DataSource shape the service, the scripts and the tests use.
 * The schema is never synchronised from entities: committed migrations are the only source of DDL.
 */
export function createDataSource(options: DatabaseOptions): DataSource {
  const { schema } = options;
  if (schema !== undefined && !IDENTIFIER.test(schema)) {
    throw new Error(`invalid schema name ${JSON.stringify(schema)}: use lower-case letters, digits and _`);
  }
  return new DataSource({
    type: 'postgres',
    url: options.url,
    schema,
    applicationName: options.applicationName ?? 'tailfleet',
    poolSize: options.poolSize ?? 10,
    connectTimeoutMS: options.connectTimeoutMs ?? 10_000,
    // Migrations are written without schema qualifiers and land in the first schema of the search path.
    extra: {
      ...(schema ? { options: `-c search_path=${schema}` } : {}),
      ...(options.minConnections ? { min: options.minConnections } : {}),
      onConnect: listenForErrors,
    },
    entities,
    migrations,
    migrationsTableName: 'migrations',
    migrationsTransactionMode: 'each',
    migrationsRun: false,
    synchronize: false,
    // gen_random_uuid() is built into PostgreSQL ≥ 13; no extension (and no superuser) needed.
    uuidExtension: 'pgcrypto',
    installExtensions: false,
    logging: options.logging ?? false,
  });
}

/**
 * The driver's pg pool itself, for the few hot paths where a TypeORM query runner per call would cost
 * more than the query's own work (or a result TypeORM drops is needed, as with several statements).
 */
export function pgPoolOf(dataSource: DataSource): Pool {
  if (!dataSource.isInitialized) throw new CannotExecuteNotConnectedError();
  return (dataSource.driver as unknown as { master: Pool }).master;
}
