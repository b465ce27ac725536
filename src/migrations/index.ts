import { readdirSync } from 'node:fs';
import type { MigrationInterface } from 'typeorm';

/** A migration is one file of this folder, `<13-digit timestamp>-<kebab-name>.ts`, exporting its class. */
const MIGRATION_FILE = /^\d{13}-[a-z0-9-]+\.(?:ts|js)$/;

type MigrationClass = new () => MigrationInterface;

function migrationClassOf(file: string): MigrationClass {
  // Loaded by name from the folder (compiled or not), so adding a migration is adding its file.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const exported = Object.values(require(`./${file}`) as Record<string, unknown>).filter(
    (v): v is MigrationClass => typeof v === 'function' && typeof (v.prototype as Partial<MigrationInterface>)?.up === 'function',
  );
  if (exported.length !== 1) throw new Error(`src/migrations/${file} must export exactly one migration class (found ${exported.length})`);
  return exported[0]!;
}

/** Every migration class, oldest first (file names start with their timestamp). */
export const migrations: MigrationClass[] = readdirSync(__dirname)
  .filter((file) => MIGRATION_FILE.test(file))
  .sort()
  .map(migrationClassOf);
