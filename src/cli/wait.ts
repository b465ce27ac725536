import { ApiError, CliError, type ApiResponse, type TailfleetClient } from './client';
import { sleep } from '../lib/time';

export interface OperationBody {
  operation: {
    id: string;
    type: string;
    status: string;
    progress: number;
    currentStep: string | null;
    error: string | null;
    failedStep: string | null;
  };
}

export const FINAL_STATUSES = new Set(['succeeded', 'failed', 'cancelled']);

// Asked of the server on every poll; a server that long-polls answers when the operation changes
// or after this many seconds, one that does not answers at once and the poll interval applies.
const LONG_POLL_SECONDS = 30;

export interface WaitOptions {
  intervalMs: number;
  timeoutMs: number;
  /** Where progress goes (stderr, so stdout keeps only the result). */
  out: NodeJS.WriteStream;
  sleep?: (ms: number) => Promise<void>;
}

function describe(op: OperationBody['operation']): string {
  const step = op.currentStep ? ` ${op.currentStep}` : '';
  return `${op.type} ${op.id.slice(0, 8)} ${op.status} ${op.progress}%${step}`;
}

/**
 * Follows an operation until it is final, showing status, percent and step: one line rewritten in
 * place on a terminal, a new line per change otherwise. Returns the last answer of
 * GET /v1/operations/:id.
 */
export async function followOperation(client: TailfleetClient, id: string, opts: WaitOptions): Promise<ApiResponse<OperationBody>> {
  const wait = opts.sleep ?? sleep;
  const tty = opts.out.isTTY === true;
  const deadline = Date.now() + opts.timeoutMs;
  let longPoll = true;
  // The first read is plain, so the state shows at once; then the server holds each request until
  // the operation is final (or 30 s pass).
  let first = true;
  // The server already holds as many long polls as it allows: the next read is a plain one.
  let busy = false;
  let last = '';
  try {
    for (;;) {
      const started = Date.now();
      let res: ApiResponse<OperationBody>;
      try {
        const seconds = Math.max(1, Math.min(LONG_POLL_SECONDS, Math.ceil((deadline - Date.now()) / 1000)));
        const query = longPoll && !first && !busy ? `?wait=${seconds}` : '';
        res = await client.request<OperationBody>('GET', `/v1/operations/${encodeURIComponent(id)}${query}`, {
          timeoutMs: longPoll ? (LONG_POLL_SECONDS + 30) * 1000 : undefined,
        });
      } catch (err) {
        // A server that refuses the parameter gets plain polls from now on; one that answers 429
        // (too many long polls open) a plain read now and, after the interval, a long poll again.
        if (longPoll && !busy && err instanceof ApiError && (err.status === 400 || err.status === 429)) {
          if (err.status === 400) longPoll = false;
          else busy = true;
          continue;
        }
        throw err;
      }
      busy = false;
      const op = res.body.operation;
      const line = describe(op);
      if (line !== last) {
        if (tty) opts.out.write(`\r\x1b[2K${line}`);
        else opts.out.write(`${line}\n`);
        last = line;
      }
      if (FINAL_STATUSES.has(op.status)) return res;
      if (Date.now() > deadline) {
        throw new CliError(`error: operation ${id} is still ${op.status} after ${Math.round(opts.timeoutMs / 1000)} s; follow it with: tailfleet ops wait ${id}`);
      }
      const spent = Date.now() - started;
      if (first && longPoll) first = false;
      else if (spent < opts.intervalMs) await wait(opts.intervalMs - spent);
    }
  } finally {
    if (tty && last) opts.out.write('\n');
  }
}
