import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Seconds; from a health probe (~1 ms) to a slow list or a request stuck behind a busy pool. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * One registry per process (or per test), so tests never read each other's numbers. Node's own
 * metrics keep their conventional names (process_cpu_seconds_total, nodejs_eventloop_lag_seconds, …)
 * so stock dashboards and alerts work on them unchanged.
 */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });

  // Every metric is registered in this process's registry only.
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Counter<L>({ name, help, labelNames, registers: [registry] });
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Gauge<L>({ name, help, labelNames, registers: [registry] });
  const histogram = <L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]) =>
    new Histogram<L>({ name, help, labelNames, buckets, registers: [registry] });

  const jobs = counter('tailfleet_jobs_total', 'Jobs finished by queue and outcome (completed, failed, retried, rate_limited).', ['queue', 'outcome']);
  const jobDuration = histogram('tailfleet_job_duration_seconds', 'Time a job spent in its processor, by queue and outcome.', ['queue', 'outcome'], [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]);
  const cloudRequests = counter('tailfleet_cloud_requests_total', 'Requests to the Hetzner and Tailscale APIs by api, method, route and status.', ['api', 'method', 'route', 'status']);
  const cloudRequestDuration = histogram('tailfleet_cloud_request_duration_seconds', 'Latency of each attempt at a cloud API request by api, method, route (template) and status.', ['api', 'method', 'route', 'status'], [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
  const cloudRateLimited = counter('tailfleet_cloud_rate_limited_total', 'Cloud API requests refused with 429 Too Many Requests, by api and route.', ['api', 'route']);
  const cloudRetries = counter('tailfleet_cloud_retries_total', 'Cloud API requests sent again by the client, by api and reason (rate_limited, transient, auth_refresh).', ['api', 'reason']);
  const rateLimitRemaining = gauge('tailfleet_cloud_rate_limit_remaining', 'Requests left in the current rate-limit window, as last reported by the API.', ['api']);
  const rateLimitLimit = gauge('tailfleet_cloud_rate_limit_limit', 'Rate-limit window size, as last reported by the API.', ['api']);
  const httpRequests = counter('tailfleet_http_requests_total', 'API requests served by method, route and status.', ['method', 'route', 'status']);
  const httpRequestDuration = histogram('http_request_duration_seconds', 'Time to answer an HTTP request, by method, route (template) and status.', ['method', 'route', 'status'], HTTP_BUCKETS);
  const reconcile = gauge('tailfleet_reconcile_findings', 'Findings of the latest reconcile pass by kind (orphan_servers, orphan_devices, drifted_instances, stuck_instances).', ['kind']);
  const reconcileRepairs = counter('tailfleet_reconcile_repairs_total', 'Repairs made by the reconciler by kind.', ['kind']);

  return {
    registry,
    jobs,
    jobDuration,
    cloudRequests,
    rateLimitRemaining,
    rateLimitLimit,
    httpRequests,
    httpRequestDuration,
    cloudRequestDuration,
    cloudRateLimited,
    cloudRetries,
    reconcile,
    reconcileRepairs,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
