import pino from 'pino';

export type Logger = pino.Logger;

/** Paths whose values never reach a log line, wherever they appear in a logged object. */
export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'token',
  '*.token',
  'apiToken',
  '*.apiToken',
  'clientSecret',
  '*.clientSecret',
  'authKey',
  '*.authKey',
  'key',
  '*.key',
  'password',
  '*.password',
  'userData',
  '*.userData',
  'user_data',
  '*.user_data',
];

export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: opts.name ?? 'tailfleet',
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  });
}

export const silentLogger: Logger = pino({ level: 'silent' });
