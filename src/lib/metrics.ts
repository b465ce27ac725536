import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CloudRequestEvent, CloudRequestObserver, CloudRetryEvent } from '../clients/http';

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

  const jobs = new Counter({
    name: 'tailfleet_jobs_total',
    help: 'Jobs finished by queue and outcome (completed, failed, retried, rate_limited).',
    labelNames: ['queue', 'outcome'] as const,
    registers: [registry],
  });
  const jobDuration = new Histogram({
    name: 'tailfleet_job_duration_seconds',
    help: 'Time a job spent in its processor, by queue and outcome.',
    labelNames: ['queue', 'outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [registry],
  });
  const cloudRequests = new Counter({
    name: 'tailfleet_cloud_requests_total',
    help: 'Requests to the Hetzner and Tailscale APIs by api, method, route and status.',
    labelNames: ['api', 'method', 'route', 'status'] as const,
    registers: [registry],
  });
  const cloudRequestDuration = new Histogram({
    name: 'tailfleet_cloud_request_duration_seconds',
    help: 'Latency of each attempt at a cloud API request by api, method, route (template) and status.',
    labelNames: ['api', 'method', 'route', 'status'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const cloudRateLimited = new Counter({
    name: 'tailfleet_cloud_rate_limited_total',
    help: 'Cloud API requests refused with 429 Too Many Requests, by api and route.',
    labelNames: ['api', 'route'] as const,
    registers: [registry],
  });
  const cloudRetries = new Counter({
    name: 'tailfleet_cloud_retries_total',
    help: 'Cloud API requests sent again by the client, by api and reason (rate_limited, transient, auth_refresh).',
    labelNames: ['api', 'reason'] as const,
    registers: [registry],
  });
  const rateLimitRemaining = new Gauge({
    name: 'tailfleet_cloud_rate_limit_remaining',
    help: 'Requests left in the current rate-limit window, as last reported by the API.',
    labelNames: ['api'] as const,
    registers: [registry],
  });
  const rateLimitLimit = new Gauge({
    name: 'tailfleet_cloud_rate_limit_limit',
    help: 'Rate-limit window size, as last reported by the API.',
    labelNames: ['api'] as const,
    registers: [registry],
  });
  const httpRequests = new Counter({
    name: 'tailfleet_http_requests_total',
    help: 'API requests served by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpRequestDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method, route (template) and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: HTTP_BUCKETS,
    registers: [registry],
  });
  const reconcile = new Gauge({
    name: 'tailfleet_reconcile_findings',
    help: 'Findings of the latest reconcile pass by kind (orphan_servers, orphan_devices, drifted_instances, stuck_instances).',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const reconcileRepairs = new Counter({
    name: 'tailfleet_reconcile_repairs_total',
    help: 'Repairs made by the reconciler by kind.',
    labelNames: ['kind'] as const,
    registers: [registry],
  });

  const cloudObserver: Required<CloudRequestObserver> = {
    onRequest(e: CloudRequestEvent): void {
      const status = String(e.status);
      cloudRequests.inc({ api: e.api, method: e.method, route: e.route, status });
      cloudRequestDuration.observe({ api: e.api, method: e.method, route: e.route, status }, e.durationMs / 1000);
      if (e.status === 429) cloudRateLimited.inc({ api: e.api, route: e.route });
      if (e.rateLimitRemaining !== undefined) rateLimitRemaining.set({ api: e.api }, e.rateLimitRemaining);
      if (e.rateLimitLimit !== undefined) rateLimitLimit.set({ api: e.api }, e.rateLimitLimit);
    },
    onRetry(e: CloudRetryEvent): void {
      cloudRetries.inc({ api: e.api, reason: e.reason });
    },
  };

  return {
    registry,
    jobs,
    jobDuration,
    cloudRequests,
    rateLimitRemaining,
    httpRequests,
    httpRequestDuration,
    cloudRequestDuration,
    cloudRateLimited,
    cloudRetries,
    reconcile,
    reconcileRepairs,
    cloudObserver,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
