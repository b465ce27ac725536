import type { Tailfleet } from '../../src/server';
import { apiClient, createSuite, type ApiClient, type Suite } from '../pipeline/stack';
import { waitFor } from './wait';

/** A suite with one tailfleet launched from it and an API client for it; set by the time tests (and later hooks) run. */
export interface Launched {
  suite: Suite;
  tf: Tailfleet;
  api: ApiClient;
}

/**
 * For a describe block: a suite (own database, queue prefix and simulator) with one tailfleet
 * launched before the tests and everything closed after them. Call it where hooks are registered;
 * read the fields inside tests and hooks.
 */
export function launchedSuite(label: string, launch?: Parameters<Suite['launch']>[0]): Launched {
  const launched = {} as Launched;
  before(async () => {
    launched.suite = await createSuite(label);
    launched.tf = await launched.suite.launch(launch);
    launched.api = apiClient(launched.tf.url!, launched.suite.apiToken);
  });
  after(async () => {
    await launched.suite?.close();
  });
  return launched;
}

/** Polls GET /v1/operations/:id until the operation has ended (succeeded, failed or cancelled); answers the response body. */
export function operationEnded(api: ApiClient, operationId: string, opts?: { timeoutMs?: number }) {
  return waitFor(
    `operation ${operationId} to finish`,
    async () => {
      const res = await api.get(`/v1/operations/${operationId}`);
      if (res.status !== 200) throw new Error(`GET /v1/operations/${operationId}: ${res.status} ${JSON.stringify(res.body)}`);
      const status = res.body.operation.status;
      return status === 'succeeded' || status === 'failed' || status === 'cancelled' ? res.body : undefined;
    },
    opts,
  );
}
