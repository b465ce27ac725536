/**
 * Finds a Chromium for the browser tests: $CHROMIUM_PATH, else the distribution's package, else —
 * as root with apt — installs Debian's `chromium`. Playwright's own browser download is not used:
 * machines here reach the package registries only.
 *
 *   npx tsx scripts/find-chromium.ts      # prints the path (installs when it can and must)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, statSync } from 'node:fs';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/lib/chromium/chromium', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];
// apt's package lists older than this are refreshed before an install.
const APT_LISTS_MAX_AGE_MS = 24 * 3600 * 1000;

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Runs `path --version`: a file that is there but cannot start (missing libraries) is no browser. */
function works(path: string): boolean {
  const r = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 20_000 });
  return r.status === 0 && /chrom/i.test(r.stdout);
}

function aptListsFresh(): boolean {
  const dir = '/var/lib/apt/lists';
  try {
    const lists = readdirSync(dir).filter((f) => f.endsWith('_Packages') || f.endsWith('Packages.lz4'));
    if (lists.length === 0) return false;
    return lists.some((f) => Date.now() - statSync(`${dir}/${f}`).mtimeMs < APT_LISTS_MAX_AGE_MS);
  } catch {
    return false;
  }
}

function installWithApt(log: (line: string) => void): void {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args: string[]) => execFileSync('apt-get', args, { env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 10 * 60_000 });
  if (!aptListsFresh()) {
    log('apt-get update');
    run(['update']);
  }
  log('apt-get install -y chromium');
  try {
    run(['install', '-y', 'chromium']);
  } catch {
    // A stale list can name package versions the mirror no longer has.
    run(['update']);
    run(['install', '-y', 'chromium']);
  }
}

export class ChromiumNotFoundError extends Error {}

export function findChromium(opts: { install?: boolean; log?: (line: string) => void } = {}): string {
  const log = opts.log ?? ((line: string) => process.stderr.write(`find-chromium: ${line}\n`));
  const fromEnv = process.env.CHROMIUM_PATH;
  if (fromEnv) {
    if (executable(fromEnv) && works(fromEnv)) return fromEnv;
    throw new ChromiumNotFoundError(`CHROMIUM_PATH=${fromEnv} is not a working Chromium (not executable, or --version failed)`);
  }
  const found = CANDIDATES.find((p) => executable(p) && works(p));
  if (found) return found;

  const isRoot = process.getuid?.() === 0;
  const hasApt = existsSync('/usr/bin/apt-get');
  if ((opts.install ?? true) && isRoot && hasApt) {
    try {
      installWithApt(log);
    } catch (err) {
      throw new ChromiumNotFoundError(`Chromium is missing and apt-get could not install it: ${(err as Error).message}`);
    }
    const installed = CANDIDATES.find((p) => executable(p) && works(p));
    if (installed) return installed;
    throw new ChromiumNotFoundError('apt-get installed chromium, but no working binary was found afterwards');
  }
  throw new ChromiumNotFoundError(
    'No Chromium found for the browser tests. Install Debian\'s package (apt-get install chromium, as root) ' +
      `or set CHROMIUM_PATH to a Chromium or Chrome binary. Looked in: ${CANDIDATES.join(', ')}` +
      (isRoot ? '' : ' (not root, so no automatic install)') +
      (hasApt ? '' : ' (no apt-get on this machine)'),
  );
}

if (require.main === module) {
  try {
    console.log(findChromium());
  } catch (err) {
    console.error((err as Error).message);
    process.exitCode = 1;
  }
}
