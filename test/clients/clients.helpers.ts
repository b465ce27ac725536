import type { ClientLogger, CloudRequestEvent } from '../../src/clients';

export interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  obj?: object;
}

/** A logger that keeps what it is told, so tests can assert the messages operators will see. */
export function captureLogger(): { logger: ClientLogger; lines: LogLine[]; messages: (level?: LogLine['level']) => string[] } {
  const lines: LogLine[] = [];
  const at =
    (level: LogLine['level']) =>
    (objOrMsg: object | string, msg?: string): void => {
      if (typeof objOrMsg === 'string') lines.push({ level, msg: objOrMsg });
      else lines.push({ level, msg: msg ?? '', obj: objOrMsg });
    };
  return {
    logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') },
    lines,
    messages: (level) => lines.filter((l) => !level || l.level === level).map((l) => l.msg),
  };
}

export function recordingObserver(): { onRequest(e: CloudRequestEvent): void; events: CloudRequestEvent[] } {
  const events: CloudRequestEvent[] = [];
  return { events, onRequest: (e) => events.push(e) };
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 2000, stepMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
