import { UnrecoverableError } from 'bullmq';
import { expect } from 'chai';
import { ActionFailedError, CloudApiError, WaitTimeoutError } from '../../src/clients/errors';
import { classifyError } from '../../src/processors/run-operation';
import { NotFoundError, StateConflictError } from '../../src/errors';

// Which failures the runner retries, which it gives up on, and which only pause the queue.

const cloud = (status: number, retryable: boolean) =>
  new CloudApiError({ api: 'hetzner', status, code: 'x', message: 'x', retryable, method: 'POST', path: '/servers' });

describe('pipeline: error classes', () => {
  it('lifecycle refusals and unrecoverable errors are permanent', () => {
    expect(classifyError(new NotFoundError('Job 1 not found'))).to.equal('permanent');
    expect(classifyError(new StateConflictError('No running instance to stop'))).to.equal('permanent');
    expect(classifyError(new UnrecoverableError('no'))).to.equal('permanent');
  });

  it('non-retryable 4xx answers are permanent, except 429', () => {
    expect(classifyError(cloud(403, false))).to.equal('permanent');
    expect(classifyError(cloud(422, false))).to.equal('permanent');
    expect(classifyError(cloud(429, true))).to.equal('rate_limited');
    expect(classifyError(cloud(429, false))).to.equal('rate_limited');
  });

  it('server errors, timeouts, failed actions and unknown errors are retried', () => {
    expect(classifyError(cloud(503, true))).to.equal('transient');
    // Not repeated by the client (creation is not idempotent), but a later job attempt may succeed.
    expect(classifyError(cloud(503, false))).to.equal('transient');
    expect(classifyError(cloud(409, true))).to.equal('transient');
    expect(classifyError(new WaitTimeoutError({ api: 'tailscale', code: 'timeout', message: 'x', path: '/devices' }))).to.equal(
      'transient',
    );
    expect(classifyError(new ActionFailedError({ id: 1, command: 'create_server', status: 'error', error: null }))).to.equal(
      'transient',
    );
    expect(classifyError(new Error('connection terminated'))).to.equal('transient');
  });
});
