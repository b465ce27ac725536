import { UnrecoverableError, WaitingError, Worker, type Job, type Queue } from 'bullmq';
import type { DataSource } from 'typeorm';
import { CloudApiError } from '../clients/errors';
import { OperationRepository, RecordNotFoundError, TransitionConflictError, transition, transitionGroup, type PatchOf } from '../db';
import type { OperationStatus } from '../entities';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { isPermanentError } from '../services/errors';
import type { StepReporter } from '../services/lifecycle.service';

export interface OperationJobData {
  operationId: string;
}

export interface RunnerDeps {
  dataSource: DataSource;
  logger: Logger;
  metrics: Pick<Metrics, 'jobs' | 'jobDuration'>;
  /** Pause target for a 429: the queue the job came from. */
  queue: Pick<Queue, 'rateLimit' | 'getRateLimitTtl' | 'name'>;
  /** Pause used when a 429 carries no reset time. */
  defaultRateLimitMs?: number;
  /** Least time between two writes of an operation's progress to PostgreSQL (default 1000). */
  progressWriteIntervalMs?: number;
}

export interface RunContext<D> {
  job: Job<D>;
  reporter: StepReporter;
  logger: Logger;
}

export interface RunHooks {
  /**
   * Runs once the job will not be tried again (last attempt, or a permanent error), after the
   * Operation is marked failed and before BullMQ moves the job to failed.
   */
  onFinalFailure?(err: Error, info: { failedStep: string | null; logger: Logger }): Promise<void>;
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

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

const clampPercent = (n: number) => Math.max(0, Math.min(100, Math.round(Number.isFinite(n) ? n : 0)));

/**
 * Moves the Operation to running for this attempt. `failed` may be taken over because an operator
 * retrying a failed job from Bull Board means "run it again"; `running` is a redelivery after a
 * stall. Returns the final status instead when there is nothing left to do. The guarded move is
 * tried first: it is the usual case and needs no read; the row is looked at only when it refuses.
 */
async function claimOperation(
  dataSource: DataSource,
  operationId: string,
  attempt: number,
): Promise<'claimed' | 'missing' | Exclude<OperationStatus, 'queued' | 'running' | 'failed'>> {
  for (let tries = 0; tries < 3; tries++) {
    try {
      await transition(dataSource, {
        entity: 'operation',
        id: operationId,
        from: ['queued', 'failed'],
        to: 'running',
        reason: attempt === 1 ? 'job started' : `attempt ${attempt} started`,
        operationId,
        patch: { attempts: attempt, finishedAt: null, failedStep: null },
        // A retried operation keeps the time its first attempt started.
        patchIfNull: { startedAt: new Date() },
      });
      return 'claimed';
    } catch (err) {
      if (err instanceof RecordNotFoundError) return 'missing';
      // Changed under us (e.g. cancelled), or already running: decide on the status it is in.
      if (!(err instanceof TransitionConflictError)) throw err;
      const status = err.actual as OperationStatus;
      if (status === 'succeeded' || status === 'cancelled') return status;
      if (status === 'running') {
        await new OperationRepository({ dataSource }).update(operationId, { attempts: attempt, failedStep: null });
        return 'claimed';
      }
    }
  }
  throw new Error(`Operation ${operationId} keeps changing; try again later`);
}

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

/**
 * The one wrapper every processor goes through: it owns the Operation row (running, progress,
 * succeeded/failed), the retry policy decisions (permanent → UnrecoverableError, 429 → pause the
 * queue without spending an attempt, otherwise let BullMQ back off), metrics and the job's log.
 */
export async function runOperation<D extends OperationJobData, T>(
  deps: RunnerDeps,
  job: Job<D>,
  fn: (ctx: RunContext<D>) => Promise<T>,
  hooks: RunHooks = {},
  signal?: AbortSignal,
): Promise<T | undefined> {
  const started = process.hrtime.bigint();
  const queueName = deps.queue.name;
  const operationId = job.data.operationId;
  const attempt = job.attemptsMade + 1;
  const maxAttempts = job.opts.attempts ?? 1;
  const logger = deps.logger.child({ queue: queueName, jobId: job.id, operationId, attempt });
  const ops = new OperationRepository({ dataSource: deps.dataSource });
  const leave = (to: 'succeeded' | 'failed' | 'queued', reason: string, patch: PatchOf<'operation'>) =>
    transition(deps.dataSource, { entity: 'operation', id: operationId, from: ['running'], to, reason, operationId, patch }).then(
      () => undefined,
      (err: unknown) => logger.warn({ err, to }, 'Could not record the operation outcome'),
    );

  const observe = (outcome: string) => {
    deps.metrics.jobs.inc({ queue: queueName, outcome });
    deps.metrics.jobDuration.observe({ queue: queueName, outcome }, Number(process.hrtime.bigint() - started) / 1e9);
  };
  // Chained, so lines keep their order even when one is not awaited.
  let logTail: Promise<void> = Promise.resolve();
  const jobLog = (line: string): Promise<void> => {
    const stamped = `${new Date().toISOString()} ${line}`;
    logTail = logTail
      .then(() => job.log(stamped))
      .then(
        () => undefined,
        (err: unknown) => logger.warn({ err }, 'Could not append to the job log'),
      );
    return logTail;
  };

  const claim = await claimOperation(deps.dataSource, operationId, attempt);
  if (claim === 'missing') {
    observe('failed');
    throw new UnrecoverableError(`Operation ${operationId} not found`);
  }
  if (claim !== 'claimed') {
    // At-least-once delivery: the work was already done (or cancelled) and only the job's own
    // completion was lost. Running it again would turn a success into a state conflict.
    logger.info({ status: claim }, 'Operation already finished; nothing to do');
    await jobLog(`operation already ${claim}; nothing to do`);
    observe('completed');
    return undefined;
  }

  let currentStep: string | null = null;
  let currentPercent = 0;
  let abandoned = false;
  const progressWriter = new ProgressWriter(
    (percent, step) => ops.reportProgress(operationId, percent, step),
    deps.progressWriteIntervalMs ?? DEFAULT_PROGRESS_WRITE_INTERVAL_MS,
    logger,
  );
  // The step reached last, written with the transition that ends the attempt (whether or not the
  // progress writer got to it), so the row ends up where a write per step would have left it.
  const stepPatch = (): PatchOf<'operation'> =>
    currentStep === null ? {} : { progress: currentPercent, currentStep };
  const reporter: StepReporter = {
    async step(name, progress, message) {
      if (abandoned) return;
      currentStep = name;
      const percent = (currentPercent = clampPercent(progress));
      logger.info({ step: name, percent }, message ?? name);
      progressWriter.report(percent, name);
      // Independent writes: sent together, they cost one round trip instead of two.
      await Promise.all([
        job.updateProgress({ step: name, percent }).catch((err: unknown) => logger.warn({ err }, 'Could not report job progress')),
        jobLog(`[${name}] ${percent}%${message ? ` ${message}` : ''}`),
      ]);
    },
  };

  // Not awaited: the line is chained ahead of every later one, and the work need not wait for Redis.
  void jobLog(`attempt ${attempt}/${maxAttempts} started`);
  logger.info('Job started');

  try {
    const work = fn({ job, reporter, logger });
    const result = signal ? await raceAbort(work, signal) : await work;
    await progressWriter.close();
    await recordSuccess(deps.dataSource, operationId, logger, currentStep);
    await jobLog('succeeded');
    logger.info('Job succeeded');
    observe('completed');
    return result;
  } catch (err) {
    await progressWriter.close();
    if (err instanceof ShutdownAbort) {
      // The drain deadline passed while this job was still running. Leave it active in Redis: its
      // lock is no longer renewed, so once it expires the stalled-job check of another worker puts
      // it back in the queue. Waiting for the lock (rather than requeueing now) keeps a second
      // worker from starting the same job while this process may still be half-way through a call.
      abandoned = true;
      await leave('queued', 'worker shut down; the job resumes on another worker', {
        ...stepPatch(),
        error: `Interrupted by worker shutdown during ${currentStep ?? 'start'}; will resume`,
      });
      logger.warn({ step: currentStep }, 'Job interrupted by shutdown; it will be picked up again as stalled');
      observe('interrupted');
      throw new WaitingError();
    }

    const message = errorMessage(err);
    const kind = classifyError(err);

    if (kind === 'rate_limited') {
      const waitMs = Math.max(
        MIN_RATE_LIMIT_PAUSE_MS,
        (err as CloudApiError).retryAfterMs ?? deps.defaultRateLimitMs ?? DEFAULT_RATE_LIMIT_PAUSE_MS,
      );
      const note = `Rate limited by ${(err as CloudApiError).api}; queue paused for ${Math.ceil(waitMs / 1000)}s`;
      await leave('queued', note, { ...stepPatch(), error: note });
      await pauseQueue(deps.queue, waitMs);
      await jobLog(`rate limited: queue ${queueName} paused for ${waitMs} ms`);
      logger.warn({ waitMs }, 'Cloud API rate limit reached; pausing the queue');
      observe('rate_limited');
      throw Worker.RateLimitError();
    }

    const final = kind === 'permanent' || attempt >= maxAttempts;
    await jobLog(`failed${currentStep ? ` at ${currentStep}` : ''}: ${message}${final ? '' : ' (will retry)'}`);
    if (final) {
      await leave('failed', kind === 'permanent' ? `failed: ${message}` : `failed after ${attempt} attempts: ${message}`, {
        ...stepPatch(),
        error: message,
        failedStep: currentStep,
        finishedAt: new Date(),
      });
      logger.error({ err, step: currentStep, permanent: kind === 'permanent' }, 'Job failed for good');
      if (hooks.onFinalFailure) {
        try {
          await hooks.onFinalFailure(err as Error, { failedStep: currentStep, logger });
        } catch (hookErr) {
          // The failed-provision listener and the sweep repeat this work, so a failure here is logged, not fatal.
          logger.error({ err: hookErr }, 'Final-failure handling failed');
        }
      }
      observe('failed');
      if (kind === 'permanent') throw new UnrecoverableError(message);
      throw err;
    }
    await leave('queued', `attempt ${attempt} failed; retrying with backoff`, { ...stepPatch(), error: message, failedStep: currentStep });
    logger.warn({ err, step: currentStep }, 'Job failed; BullMQ will retry with backoff');
    observe('retried');
    throw err;
  }
}

// Tries of the success write that fail on the database itself (a dropped connection) before the
// attempt is given up, and the pause before the first retry (doubled each time).
const SUCCESS_WRITE_TRIES = 5;
const SUCCESS_WRITE_RETRY_MS = 100;

/**
 * The work is done, so the Operation succeeded. Usually it is `running`; but when BullMQ redelivered
 * this job while it ran (its lock lapsed), the duplicate may have moved the Operation to `queued`
 * (a retryable failure) or `failed` (a lost race) meanwhile. Recording only from `running` then left
 * it queued for ever once this run completed the job. Those are moved back through `running`.
 *
 * A write that fails on the database (its connection was dropped) is tried again on a fresh
 * connection, and if it still fails the error is thrown: the job must not complete in BullMQ while
 * its Operation stays `running`, because nothing else ever looks at a completed job again. Thrown,
 * it is retried like any failed attempt, and the next run finds the work done.
 */
async function recordSuccess(dataSource: DataSource, operationId: string, logger: Logger, lastStep: string | null): Promise<void> {
  const patch = { progress: 100, currentStep: lastStep ?? undefined, error: null, failedStep: null, finishedAt: new Date() };
  const done = { entity: 'operation', id: operationId, from: ['running'], to: 'succeeded', reason: 'job succeeded', operationId, patch } as const;
  // The usual case first, without reading the row: it is still running.
  let from: OperationStatus = 'running';
  let conflicts = 0;
  for (let tries = 0; conflicts < 3; tries++) {
    try {
      if (from === 'running') await transition(dataSource, done);
      else {
        const back = { entity: 'operation', id: operationId, from: [from], to: 'running', reason: 'a duplicate delivery of the job finished the work', operationId } as const;
        await transitionGroup(dataSource, [back, done]);
      }
      return;
    } catch (err) {
      if (err instanceof RecordNotFoundError) return;
      if (!(err instanceof TransitionConflictError)) {
        if (tries + 1 >= SUCCESS_WRITE_TRIES) throw err;
        logger.warn({ err, tries: tries + 1 }, 'Could not record the operation success; trying again');
        await new Promise((resolve) => setTimeout(resolve, SUCCESS_WRITE_RETRY_MS * 2 ** tries));
        continue;
      }
      conflicts++;
      // transitionGroup reports the status of whichever move refused; only the first move can.
      from = err.actual as OperationStatus;
      if (from === 'succeeded' || from === 'cancelled') return;
    }
  }
  logger.warn('Could not record the operation outcome: it keeps changing');
}

class ShutdownAbort extends Error {
  constructor() {
    super(SHUTDOWN_ABORT_REASON);
    this.name = 'ShutdownAbort';
  }
}

/**
 * Rejects as soon as the signal aborts; the work itself cannot be cancelled (the service takes no
 * signal), so its eventual outcome is swallowed — the process is on its way out.
 */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(new ShutdownAbort());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      work.catch(() => undefined);
      reject(new ShutdownAbort());
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}
