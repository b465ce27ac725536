import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
// A YAML parser that is already installed (mocha's dependency), used only to read the alert rules.
import { load as loadYaml } from 'js-yaml';
import type { Registry } from 'prom-client';
import { waitFor } from '../pipeline/stack';
import { launchedSuite } from '../helpers/launched';

// The histograms and counters behind the Grafana dashboard and the alert rules, read from a
// running stack after real traffic, and the dashboard and rules checked against them.

const ROOT = path.resolve(__dirname, '../..');

interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

async function samples(registry: Registry, name: string): Promise<Sample[]> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  return (await metric.get()).values as Sample[];
}

/** Names of metrics referenced in PromQL; histogram series (_bucket, _count, _sum) are mapped to their histogram. */
function metricNamesIn(expr: string): string[] {
  const names = new Set<string>();
  // Strip label matchers, strings and range selectors first: their contents are not metric names.
  const bare = expr.replace(/\{[^}]*\}/g, '').replace(/"[^"]*"/g, '').replace(/\[[^\]]*\]/g, '');
  for (const m of bare.matchAll(/\b((?:tailfleet|http|process|nodejs)_[a-z0-9_]+)\b/g)) {
    names.add(m[1]!.replace(/_(bucket|count|sum)$/, ''));
  }
  return [...names];
}

describe('metrics: histograms, dashboard and alerts', function () {
  this.timeout(60_000);

  const stack = launchedSuite('metrics');

  before(async () => {
    // One refused create (429, then retried by the client) so the rate-limit series exist.
    stack.suite.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers', status: 429, times: 1 }]);
    const created = await stack.api.post('/v1/agents', { name: 'metrics-1' });
    expect(created.status).to.equal(201);
    const agentId = created.body.agent.id as string;
    await waitFor('the provision to succeed', async () => {
      const res = await stack.api.get(`/v1/operations/${created.body.operation.id}`);
      return res.body.operation?.status === 'succeeded';
    });
    expect((await stack.api.get(`/v1/agents/${agentId}`)).status).to.equal(200);
    expect((await stack.api.get('/v1/no-such-route')).status).to.equal(404);
    expect((await fetch(`${stack.tf.url}/metrics`)).status).to.equal(200);
  });

  it('times HTTP requests by method, route template and status', async () => {
    const values = await samples(stack.tf.metrics.registry, 'http_request_duration_seconds');
    const counts = values.filter((v) => v.metricName === 'http_request_duration_seconds_count');
    const find = (method: string, route: string, status: string) =>
      counts.find((v) => v.labels.method === method && v.labels.route === route && v.labels.status === status);
    expect(find('POST', '/v1/agents', '201')?.value).to.equal(1);
    expect(find('GET', '/v1/agents/:id', '200')?.value).to.be.at.least(1);
    expect(find('GET', 'unmatched', '404')?.value).to.equal(1);
    // Never the raw path: the agent id must not become a label value.
    expect(counts.every((v) => !String(v.labels.route).match(/[0-9a-f]{8}-[0-9a-f]{4}/))).to.equal(true);
    const buckets = values.filter((v) => v.metricName === 'http_request_duration_seconds_bucket' && v.labels.route === '/v1/agents');
    expect(buckets.map((b) => b.labels.le)).to.include('+Inf');
  });

  it('times jobs by queue and outcome', async () => {
    const values = await samples(stack.tf.metrics.registry, 'tailfleet_job_duration_seconds');
    const provision = values.find(
      (v) => v.metricName === 'tailfleet_job_duration_seconds_count' && v.labels.queue === 'provision' && v.labels.outcome === 'completed',
    );
    expect(provision?.value).to.equal(1);
  });

  it('times cloud requests by api, method, route template and status, and counts 429s and retries', async () => {
    const values = await samples(stack.tf.metrics.registry, 'tailfleet_cloud_request_duration_seconds');
    const counts = values.filter((v) => v.metricName === 'tailfleet_cloud_request_duration_seconds_count');
    const label = (v: Sample) => `${v.labels.api} ${v.labels.method} ${v.labels.route} ${v.labels.status}`;
    expect(counts.map(label)).to.include.members([
      'hetzner POST /servers 429',
      'hetzner POST /servers 201',
      'tailscale POST /oauth/token 200',
    ]);
    expect(counts.every((v) => !/\/\d+/.test(String(v.labels.route)))).to.equal(true);

    const limited = await samples(stack.tf.metrics.registry, 'tailfleet_cloud_rate_limited_total');
    expect(limited.map((v) => [v.labels.api, v.labels.route, v.value])).to.deep.include(['hetzner', '/servers', 1]);
    const retries = await samples(stack.tf.metrics.registry, 'tailfleet_cloud_retries_total');
    expect(retries.find((v) => v.labels.api === 'hetzner' && v.labels.reason === 'rate_limited')?.value).to.equal(1);
  });

  it("exports Node's default metrics under their conventional names", async () => {
    const text = await stack.tf.metrics.registry.metrics();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(text).to.match(new RegExp(`^${name} `, 'm'), name);
    }
    expect(text).not.to.match(/^tailfleet_process_/m);
  });

  it('the dashboard queries only metrics the registry has', async () => {
    const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'deploy/grafana/tailfleet.json'), 'utf8'));
    const panels = (dashboard.panels as any[]).filter((p) => p.type !== 'row');
    expect(panels.length).to.be.at.least(10);
    const exprs = panels.flatMap((p) => (p.targets as { expr: string }[]).map((t) => t.expr));
    const used = new Set(exprs.flatMap(metricNamesIn));
    for (const wanted of [
      'http_request_duration_seconds',
      'tailfleet_job_duration_seconds',
      'tailfleet_jobs_total',
      'tailfleet_queue_jobs',
      'tailfleet_cloud_request_duration_seconds',
      'tailfleet_cloud_rate_limited_total',
      'tailfleet_cloud_rate_limit_remaining',
      'tailfleet_reconcile_findings',
    ]) {
      expect(used, wanted).to.include(wanted);
    }
    const missing = [...used].filter((name) => !stack.tf.metrics.registry.getSingleMetric(name));
    expect(missing).to.deep.equal([]);
  });

  it('the alert rules parse and use only metrics the registry has', async () => {
    const doc = loadYaml(readFileSync(path.join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8')) as {
      groups: { name: string; rules: { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[];
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).to.include.members([
      'TailfleetOperationsFailing',
      'TailfleetQueueBacklogGrowing',
      'TailfleetRateLimitBudgetLow',
      'TailfleetReconcileFindings',
    ]);
    for (const rule of rules) {
      expect(rule.expr, rule.alert).to.be.a('string').with.length.above(0);
      expect(rule.annotations?.summary, rule.alert).to.be.a('string');
      expect(rule.labels?.severity, rule.alert).to.be.oneOf(['info', 'warning', 'critical']);
      if (rule.for !== undefined) expect(rule.for, rule.alert).to.match(/^\d+[smh]$/);
    }
    const used = new Set(rules.flatMap((r) => metricNamesIn(r.expr)));
    const missing = [...used].filter((name) => !stack.tf.metrics.registry.getSingleMetric(name));
    expect(missing).to.deep.equal([]);
    expect(used.size).to.be.at.least(5);
  });
});
