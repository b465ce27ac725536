import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');

let built: Promise<string> | undefined;

/**
 * The production build (`tsconfig.build.json`, what `npm run build` and the image run), compiled once
 * per test run into a directory of its own and removed when the run ends. Run its entry points with
 * `NODE_PATH` pointing at the checkout's node_modules (`builtEnv()`), as the image finds them next
 * to dist/.
 */
export function productionBuild(): Promise<string> {
  built ??= new Promise<string>((resolve, reject) => {
    const outDir = mkdtempSync(path.join(tmpdir(), 'tailfleet-dist-'));
    process.once('exit', () => rmSync(outDir, { recursive: true, force: true }));
    const tsc = spawn(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    tsc.stdout.on('data', (d: Buffer) => (output += d.toString('utf8')));
    tsc.stderr.on('data', (d: Buffer) => (output += d.toString('utf8')));
    tsc.on('error', reject);
    tsc.on('close', (code) => (code === 0 ? resolve(outDir) : reject(new Error(`tsc exited with ${code}:\n${output}`))));
  });
  return built;
}

/** Environment a compiled entry point needs to find the dependencies. */
export function builtEnv(): Record<string, string> {
  return { NODE_PATH: path.join(ROOT, 'node_modules') };
}
