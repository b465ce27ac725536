import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface CloudRequestEvent {
  api: 'hetzner' | 'tailscale';
  method: string;
  route: string;
  status: number | 'network' | 'timeout';
  durationMs: number;
  rateLimitRemaining?: number;
  rateLimitLimit?: number;
}

/** One registry per process (or per test), so tests never read each other's numbers. */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'tailfleet_' });

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
    help: 'Latency of cloud API requests by api.',
    labelNames: ['api'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
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

  const cloudObserver = {
    onRequest(e: CloudRequestEvent): void {
      cloudRequests.inc({ api: e.api, method: e.method, route: e.route, status: String(e.status) });
      cloudRequestDuration.observe({ api: e.api }, e.durationMs / 1000);
      if (e.rateLimitRemaining !== undefined) rateLimitRemaining.set({ api: e.api }, e.rateLimitRemaining);
      if (e.rateLimitLimit !== undefined) rateLimitLimit.set({ api: e.api }, e.rateLimitLimit);
    },
  };

  return {
    registry,
    jobs,
    jobDuration,
    cloudRequests,
    rateLimitRemaining,
    httpRequests,
    reconcile,
    reconcileRepairs,
    cloudObserver,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
