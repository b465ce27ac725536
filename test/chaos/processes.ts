import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { waitFor } from '../helpers/wait';

/** Child processes of the chaos suite: a Redis of its own and tailfleet worker processes. */

export const ROOT = path.resolve(__dirname, '../..');

/** waitFor with the longer default deadline a chaos run needs. */
export const until: typeof waitFor = (what, fn, opts = {}) => waitFor(what, fn, { timeoutMs: 30_000, intervalMs: 25, ...opts });

export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One RESP PING over a fresh socket: true when Redis answers PONG. */
export function redisPing(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => finish(false), timeoutMs);
    let buf = '';
    function finish(ok: boolean) {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    }
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'));
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) finish(buf.startsWith('+PONG'));
    });
    socket.on('error', () => finish(false));
  });
}

async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await once(child, 'exit');
}

/**
 * `redis-server` on its own port and directory with an append-only file fsynced on every write, so
 * a SIGKILL loses nothing that was acknowledged and a restart on the same directory replays it all.
 */
export class RedisProcess {
  private child: ChildProcess | undefined;
  private log: WriteStream;
  restarts = 0;

  constructor(
    readonly port: number,
    readonly dir: string,
  ) {
    this.log = createWriteStream(path.join(dir, 'redis.log'), { flags: 'a' });
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    const child = spawn(
      'redis-server',
      [
        '--port', String(this.port),
        '--bind', '127.0.0.1',
        '--dir', this.dir,
        '--appendonly', 'yes',
        '--appendfsync', 'always',
        '--save', '',
        '--maxmemory-policy', 'noeviction',
        '--daemonize', 'no',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.pipe(this.log, { end: false });
    child.stderr!.pipe(this.log, { end: false });
    this.child = child;
    await until('redis-server to answer PING', async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode} (see ${this.dir}/redis.log)`);
      return redisPing(this.port);
    }, { timeoutMs: 15_000 });
  }

  /** Kills the server (SIGKILL: no shutdown hooks) and waits until the port no longer answers. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    await exited(child);
    await until('redis to stop answering', async () => !(await redisPing(this.port, 200)), { timeoutMs: 5_000 });
  }

  async restart(): Promise<void> {
    this.restarts++;
    await this.start();
  }

  async stop(): Promise<void> {
    await this.kill('SIGKILL').catch(() => undefined);
    this.log.end();
  }
}

/** A tailfleet worker process (test/chaos/worker.main.ts), run by node with tsx's require hook. */
export class WorkerProcess {
  private child: ChildProcess | undefined;
  private tail: string[] = [];
  private log: WriteStream;
  starts = 0;
  /** Output lines that are not pino JSON (raw stack dumps and the like), over every start. */
  readonly unstructured: string[] = [];

  constructor(
    readonly name: string,
    private readonly env: Record<string, string>,
    logFile: string,
  ) {
    this.log = createWriteStream(logFile, { flags: 'a' });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines the process wrote, for failure messages. */
  lastOutput(lines = 30): string {
    return this.tail.slice(-lines).join('\n');
  }

  async start(): Promise<void> {
    this.starts++;
    // node itself (not the npx/tsx wrappers) so that the pid we SIGKILL is the process doing the work.
    const child = spawn(process.execPath, ['--require', 'tsx/cjs', path.join(ROOT, 'test/chaos/worker.main.ts')], {
      cwd: ROOT,
      env: { ...process.env, ...this.env, CHAOS_WORKER_NAME: this.name },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    let ready = false;
    // Per stream: a chunk may end in the middle of a line.
    const lineReader = () => {
      let partial = '';
      return (d: Buffer) => {
        const text = d.toString('utf8');
        this.log.write(text);
        const lines = (partial + text).split('\n');
        partial = lines.pop()!;
        onLines(lines);
      };
    };
    const onLines = (lines: string[]) => {
      for (const line of lines) {
        if (!line) continue;
        this.tail.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
        if (line.startsWith('chaos-worker-ready')) ready = true;
        else if (!line.startsWith('{')) this.unstructured.push(line);
      }
      if (this.tail.length > 200) this.tail.splice(0, this.tail.length - 200);
    };
    child.stdout!.on('data', lineReader());
    child.stderr!.on('data', lineReader());
    await until(`worker ${this.name} to start`, () => {
      if (child.exitCode !== null) throw new Error(`worker ${this.name} exited with ${child.exitCode}:\n${this.lastOutput()}`);
      return ready;
    }, { timeoutMs: 60_000, intervalMs: 50 });
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill(signal);
    await exited(child);
  }

  /**
   * Freezes the process (SIGSTOP) where it stands, as a long pause of the machine would: it claims,
   * finishes and writes nothing until resume(). A process that is not running is left alone.
   */
  pause(): void {
    if (this.running) this.child!.kill('SIGSTOP');
  }

  resume(): void {
    if (this.running) this.child!.kill('SIGCONT');
  }

  async stop(): Promise<void> {
    await this.kill('SIGKILL').catch(() => undefined);
    this.log.end();
  }
}
