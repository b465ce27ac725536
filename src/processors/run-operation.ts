import { DelayedError, UnrecoverableError, WaitingError, Worker, type Job, type Queue } from 'bullmq';
import { CloudApiError } from '../clients/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { untilAborted } from '../lib/time';
import { isDatabaseUnavailable } from '../operations/errors';
import type { NewEvent, TransitionRequest } from '../db/transitions';
import type { OperationLedger } from '../operations/ledger';
import { JobMismatchError, parseJobPayload } from '../queues/jobs';
import type { JobPayloads, QueueName } from '../queues/queues';
import { errorMessage, isPermanentError, StateConflictError } from '../errors';

/**
 * The one adapter from a BullMQ delivery to the operation ledger: parse the job, claim its operation,
 * run one workflow call, record the outcome. BullMQ-specific concerns live here (the job's log and
 * progress, pausing the queue on a 429, moving the job back without spending an attempt); every
 * status change of the operation goes through the ledger.
 */

export interface OperationJobData {
  operationId: string;
}

/** What a workflow reports while it runs (structurally the workflows' StepReporter). */
export interface StepReporter {
  step(name: string, progress: number, message?: string): Promise<void>;
}

export interface RunnerDeps {
  ledger: OperationLedger;
  logger: Logger;
  metrics: Pick<Metrics, 'jobs' | 'jobDuration'>;
  /** Pause target for a 429: the queue the job came from. */
  queue: Pick<Queue, 'rateLimit' | 'getRateLimitTtl' | 'name'>;
  /** Pause used when a 429 carries no reset time. */
  defaultRateLimitMs?: number;
  /** Least time between two writes of an operation's progress to PostgreSQL (default 1000). */
  progressWriteIntervalMs?: number;
  /** How long a job waits when our own database is unreachable, before it tries again (default 5000). */
  outageRetryMs?: number;
  /** Jobs whose final failure the processor handled; the workers' `failed` listener leaves those alone. */
  handledFailures?: Set<string>;
}

/** The operation a workflow runs for (structurally the workflows' OperationContext). */
export interface OperationHandle {
  operationId: string;
  /**
   * Commits the work's last moves together with the operation's success (the ledger's finish), so
   * the runner records no success of its own afterwards. `lastStep` is the step the operation shows
   * once it succeeded; `events` (the work's audit events) are written with the moves. Throws, with
   * nothing written, when a move cannot happen.
   */
  finish(moves: readonly TransitionRequest[], lastStep: string, events?: readonly NewEvent[]): Promise<void>;
}

export interface RunContext<D> {
  job: Job<D>;
  reporter: StepReporter;
  logger: Logger;
  operation: OperationHandle;
}

export type ErrorClass = 'permanent' | 'rate_limited' | 'transient';

/** Trying again cannot help a permanent error; a 429 is about pacing, not about this job. */
export function classifyError(err: unknown): ErrorClass {
  if (err instanceof CloudApiError) {
    if (err.status === 429) return 'rate_limited';
    if (!err.retryable && err.status >= 400 && err.status < 500) return 'permanent';
    return 'transient';
  }
  if (err instanceof UnrecoverableError || (err as Error)?.name === 'UnrecoverableError') return 'permanent';
  return isPermanentError(err) ? 'permanent' : 'transient';
}

const clampPercent = (n: number) => Math.max(0, Math.min(100, Math.round(Number.isFinite(n) ? n : 0)));

const DEFAULT_PROGRESS_WRITE_INTERVAL_MS = 1000;

/**
 * Operation.progress is for people watching a long wait (a shutdown, an enrollment). Writing it on
 * every step cost each job one database round trip per step; instead a step is written at most once
 * per interval, from a timer, and the step reached last rides on the transition that ends the
 * attempt. A write never overtakes that transition: close() waits for the one in flight, and the
 * repository only writes progress while the operation is running.
 */
class ProgressWriter {
  private unwritten: { percent: number; step: string } | null = null;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly write: (percent: number, step: string) => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  report(percent: number, step: string): void {
    if (this.closed) return;
    this.unwritten = { percent, step };
    this.schedule();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.writing;
  }

  private schedule(): void {
    if (this.timer || this.writing) return;
    this.timer = setTimeout(() => this.flush(), this.intervalMs);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = undefined;
    const next = this.unwritten;
    if (this.closed || !next) return;
    this.unwritten = null;
    this.writing = this.write(next.percent, next.step).then(
      () => undefined,
      (err: unknown) => this.logger.warn({ err }, 'Could not record the operation progress'),
    );
    void this.writing.finally(() => {
      this.writing = undefined;
      if (this.unwritten && !this.closed) this.schedule();
    });
  }
}

/**
 * The job's own log and progress, what Bull Board shows. Each line and step used to cost a Redis
 * command (two per step), most of a short job's Redis traffic; instead they are written at most
 * once per interval, and once more when the attempt ends, so a short job costs one command for its
 * log and one for its progress. The lines written together form one log entry, in order.
 */
class JobReport {
  private lines: string[] = [];
  private progress: { step: string; percent: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly job: Pick<Job, 'log' | 'updateProgress'>,
    private readonly intervalMs: number,
    private readonly logger: () => Logger,
  ) {}

  log(line: string): void {
    if (this.closed) return;
    this.lines.push(`${new Date().toISOString()} ${line}`);
    this.schedule();
  }

  step(step: string, percent: number): void {
    if (this.closed) return;
    this.progress = { step, percent };
    this.schedule();
  }

  /** Writes what is buffered, after any write in flight. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const { lines, progress } = this;
    this.lines = [];
    this.progress = undefined;
    if (lines.length === 0 && !progress) return this.tail;
    const warn = (what: string) => (err: unknown) => this.logger().warn({ err }, `Could not ${what}`);
    this.tail = this.tail.then(async () => {
      // Independent writes: sent together, they cost one round trip instead of two.
      await Promise.all([
        lines.length > 0 ? this.job.log(lines.join('\n')).catch(warn('append to the job log')) : undefined,
        progress ? this.job.updateProgress(progress).catch(warn('report job progress')) : undefined,
      ]);
    });
    return this.tail;
  }

  /** The attempt ended: the rest is written, and nothing after it. */
  close(): Promise<void> {
    const last = this.flush();
    this.closed = true;
    return last;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }
}

// A reset time in the past or a few ms away still deserves a short pause, or the queue hammers the API.
const MIN_RATE_LIMIT_PAUSE_MS = 250;
// For a 429 that names no reset time (Tailscale sends none): the client has already waited and
// retried, so a short pause is enough; a long one would stall every job of the queue for nothing.
const DEFAULT_RATE_LIMIT_PAUSE_MS = 5_000;

/**
 * Pauses the queue for `ms` unless a longer pause is already in force: jobs hitting 429s at once
 * must not cut each other's pauses short (BullMQ's rateLimit replaces the current one).
 */
export async function pauseQueue(queue: Pick<Queue, 'rateLimit' | 'getRateLimitTtl'>, ms: number): Promise<void> {
  const current = await queue.getRateLimitTtl();
  if (current < ms) await queue.rateLimit(ms);
}

/** Reason given to the abort signal when shutdown's drain deadline passes. */
export const SHUTDOWN_ABORT_REASON = 'worker shutdown: drain deadline passed';

const DEFAULT_OUTAGE_RETRY_MS = 5_000;

/**
 * Runs one delivery of an operation's job. `queue` names the queue the job came from: the payload is
 * parsed for it and the claim only succeeds on the operation the job belongs to (its type, its ids,
 * its job id), so a job added or duplicated by hand that does not match fails as unrecoverable and
 * changes nothing.
 *
 * Outcomes: success → the ledger's succeed; a permanent error or the last attempt → fail (recorded
 * only while this delivery owns the operation, then the final-failure hook); otherwise → retry, and
 * BullMQ backs off. Three interruptions spend no attempt: a 429 (the queue pauses), our own database
 * being unreachable (the job waits and comes back), and the drain deadline of a shutdown (the job
 * goes back to waiting for another worker).
 */
export async function runOperation<K extends QueueName, T>(
  deps: RunnerDeps,
  queueName: K,
  job: Job<JobPayloads[K]>,
  token: string | undefined,
  fn: (ctx: RunContext<JobPayloads[K]>) => Promise<T>,
  signal?: AbortSignal,
): Promise<T | undefined> {
  const attempt = job.attemptsMade + 1;
  const run: Attempt = { logger: deps.logger.child({ queue: queueName, jobId: job.id, attempt }) };
  const report = new JobReport(job, deps.progressWriteIntervalMs ?? DEFAULT_PROGRESS_WRITE_INTERVAL_MS, () => run.logger);
  try {
    return await runAttempt(deps, queueName, job, token, fn, signal, run, report);
  } finally {
    // Before BullMQ moves the job on: its log and progress are complete when it completes or fails.
    await report.close();
  }
}

interface Attempt {
  logger: Logger;
}

async function runAttempt<K extends QueueName, T>(
  deps: RunnerDeps,
  queueName: K,
  job: Job<JobPayloads[K]>,
  token: string | undefined,
  fn: (ctx: RunContext<JobPayloads[K]>) => Promise<T>,
  signal: AbortSignal | undefined,
  run: Attempt,
  report: JobReport,
): Promise<T | undefined> {
  const started = process.hrtime.bigint();
  const attempt = job.attemptsMade + 1;
  const maxAttempts = job.opts.attempts ?? 1;
  const claimToken = token ?? null;
  let logger = run.logger;

  const observe = (outcome: string) => {
    deps.metrics.jobs.inc({ queue: queueName, outcome });
    deps.metrics.jobDuration.observe({ queue: queueName, outcome }, Number(process.hrtime.bigint() - started) / 1e9);
  };
  const jobLog = (line: string): void => report.log(line);
  const handled = () => deps.handledFailures?.add(String(job.id));
  /** Back to the queue without spending an attempt, because our own database is unreachable. */
  const waitForDatabase = async (err: unknown): Promise<never> => {
    const retryMs = deps.outageRetryMs ?? DEFAULT_OUTAGE_RETRY_MS;
    logger.warn({ err: { message: errorMessage(err) }, retryMs }, 'Database unreachable; the job waits and tries again without spending an attempt');
    jobLog(`database unreachable; trying again in ${retryMs} ms (no attempt spent)`);
    await report.flush();
    await job.moveToDelayed(Date.now() + retryMs, token);
    observe('deferred');
    throw new DelayedError();
  };

  let data: JobPayloads[K];
  try {
    data = parseJobPayload(queueName, job.data);
  } catch (err) {
    return refuse(err as JobMismatchError);
  }
  const operationId = (data as OperationJobData).operationId;
  logger = run.logger = logger.child({ operationId });

  let claim;
  try {
    claim = await deps.ledger.claim(operationId, {
      attempt,
      token: claimToken,
      delivery: {
        type: queueName,
        jobId: String(job.id),
        agentId: (data as { agentId?: string }).agentId,
        provisioningJobId: (data as { provisioningJobId?: string }).provisioningJobId,
      },
    });
  } catch (err) {
    if (err instanceof JobMismatchError) return refuse(err);
    if (isDatabaseUnavailable(err)) return waitForDatabase(err);
    throw err;
  }
  if (claim === 'missing') return refuse(new JobMismatchError(`Operation ${operationId} not found`));
  // An earlier delivery of this job may still be at work (its lock lapsed, it did not die).
  const tookOver = claim === 'taken-over';
  if (claim === 'failed') {
    // The attempt that failed, delivered again because its worker died before BullMQ recorded the
    // failure. The operation's failure stands; the job fails too, so an operator can retry it.
    handled();
    logger.warn('Operation already failed; this delivery is the failed attempt again and runs nothing');
    jobLog('operation already failed; nothing runs (retry the job to run it again)');
    observe('failed');
    throw new UnrecoverableError(`Operation ${operationId} already failed`);
  }
  if (claim !== 'claimed' && !tookOver) {
    // At-least-once delivery: the work was already done (or cancelled) and only the job's own
    // completion was lost. Running it again would turn a success into a state conflict.
    logger.info({ status: claim }, 'Operation already finished; nothing to do');
    jobLog(`operation already ${claim}; nothing to do`);
    observe('completed');
    return undefined;
  }

  let currentStep: string | null = null;
  let currentPercent = 0;
  let abandoned = false;
  const progressWriter = new ProgressWriter(
    (percent, step) => deps.ledger.progress(operationId, percent, step),
    deps.progressWriteIntervalMs ?? DEFAULT_PROGRESS_WRITE_INTERVAL_MS,
    logger,
  );
  const stepState = () => ({ step: currentStep, percent: currentPercent });
  const reporter: StepReporter = {
    async step(name, progress, message) {
      if (abandoned) return;
      currentStep = name;
      const percent = (currentPercent = clampPercent(progress));
      logger.info({ step: name, percent }, message ?? name);
      progressWriter.report(percent, name);
      report.step(name, percent);
      jobLog(`[${name}] ${percent}%${message ? ` ${message}` : ''}`);
    },
  };

  jobLog(`attempt ${attempt}/${maxAttempts} started`);
  logger.info('Job started');

  // Set once the workflow's finish committed the operation's success with its last moves.
  let succeeded = false;
  const operation: OperationHandle = {
    operationId,
    async finish(moves, lastStep, events) {
      // A progress write must not land between the success and the step it names (see ProgressWriter).
      await progressWriter.close();
      succeeded = await deps.ledger.finish(operationId, moves, { step: lastStep, percent: 100 }, events);
    },
  };

  try {
    const work = fn({ job: job as Job<JobPayloads[K]>, reporter, logger, operation });
    const result = signal ? await untilAborted(work, signal, () => new ShutdownAbort()) : await work;
    await progressWriter.close();
    try {
      if (!succeeded) await deps.ledger.succeed(operationId, stepState());
    } catch (err) {
      if (isDatabaseUnavailable(err)) return await waitForDatabase(err);
      throw err;
    }
    jobLog('succeeded');
    logger.info('Job succeeded');
    observe('completed');
    return result;
  } catch (err) {
    if (err instanceof DelayedError) throw err;
    await progressWriter.close();
    try {
      return await settleFailure(err);
    } catch (settleErr) {
      // Recording the outcome needs the database; without it the attempt is not spent either.
      if (isDatabaseUnavailable(settleErr) && !(settleErr instanceof DelayedError)) return waitForDatabase(settleErr);
      throw settleErr;
    }
  }

  async function refuse(err: JobMismatchError): Promise<never> {
    handled();
    logger.error({ err: { message: err.message } }, 'Job refused: it does not match an operation; nothing was changed');
    jobLog(`refused: ${err.message}`);
    observe('failed');
    throw new UnrecoverableError(err.message);
  }

  async function settleFailure(err: unknown): Promise<never> {
    if (err instanceof ShutdownAbort) {
      // The drain deadline passed while this job was still running: it goes back to waiting for
      // another worker now, without counting as a stall or an attempt.
      abandoned = true;
      await deps.ledger.abandon(operationId, claimToken, {
        ...stepState(),
        reason: 'worker shut down; the job resumes on another worker',
        error: `Interrupted by worker shutdown during ${currentStep ?? 'start'}; will resume`,
      });
      await report.flush();
      await job.moveToDelayed(Date.now(), token);
      logger.warn({ step: currentStep }, 'Job interrupted by shutdown; back in the queue for another worker');
      observe('interrupted');
      throw new WaitingError();
    }
    if (isDatabaseUnavailable(err)) return waitForDatabase(err);

    const message = errorMessage(err);
    // A delivery that took the claim over and then lost a guarded write most likely lost it to the
    // earlier delivery of the same job, still finishing the work: that is no failure of the
    // operation. It hands back like a retryable error; the next attempt finds the work done (or, if
    // another operation really won, a state that refuses it for good).
    const kind = tookOver && err instanceof StateConflictError && err.lostRace ? 'transient' : classifyError(err);

    if (kind === 'rate_limited') {
      const waitMs = Math.max(
        MIN_RATE_LIMIT_PAUSE_MS,
        (err as CloudApiError).retryAfterMs ?? deps.defaultRateLimitMs ?? DEFAULT_RATE_LIMIT_PAUSE_MS,
      );
      const note = `Rate limited by ${(err as CloudApiError).api}; queue paused for ${Math.ceil(waitMs / 1000)}s`;
      await deps.ledger.abandon(operationId, claimToken, { ...stepState(), reason: note, error: note });
      await pauseQueue(deps.queue, waitMs);
      jobLog(`rate limited: queue ${queueName} paused for ${waitMs} ms`);
      logger.warn({ waitMs }, 'Cloud API rate limit reached; pausing the queue');
      observe('rate_limited');
      throw Worker.RateLimitError();
    }

    const final = kind === 'permanent' || attempt >= maxAttempts;
    jobLog(`failed${currentStep ? ` at ${currentStep}` : ''}: ${message}${final ? '' : ' (will retry)'}`);
    if (final) {
      handled();
      const failed = await deps.ledger.fail(operationId, claimToken, {
        ...stepState(),
        reason: kind === 'permanent' ? `failed: ${message}` : `failed after ${attempt} attempts: ${message}`,
        error: message,
        cause: err,
        logger,
      });
      if (failed) logger.error({ err, step: currentStep, permanent: kind === 'permanent' }, 'Job failed for good');
      else logger.warn({ err: { message } }, 'Job failed, but another delivery owns its operation; its outcome stands');
      observe('failed');
      if (kind === 'permanent') throw new UnrecoverableError(message);
      throw err;
    }
    await deps.ledger.retry(operationId, claimToken, {
      ...stepState(),
      reason: `attempt ${attempt} failed; retrying with backoff`,
      error: message,
    });
    logger.warn({ err, step: currentStep }, 'Job failed; BullMQ will retry with backoff');
    observe('retried');
    throw err;
  }
}

class ShutdownAbort extends Error {
  constructor() {
    super(SHUTDOWN_ABORT_REASON);
    this.name = 'ShutdownAbort';
  }
}
