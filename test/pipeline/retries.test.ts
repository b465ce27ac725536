import { expect } from 'chai';
import { Queue } from 'bullmq';
import { pauseQueue } from '../../src/processors/run-operation';
import type { Tailfleet } from '../../src/server';
import { REDIS_URL, apiClient, createSuite, waitFor, type ApiClient, type Suite } from './stack';

// How the runner treats failures: transient ones are retried by BullMQ with backoff, a 429 pauses
// the queue without spending an attempt, a permanent one fails at once.

describe('pipeline: retries, rate limits and permanent errors', function () {
  this.timeout(60_000);

  let suite: Suite;
  let tf: Tailfleet;
  let api: ApiClient;
  let agentId: string;

  const op = async (id: string) =>
    ((await suite.db.dataSource.query(`SELECT status, attempts, error, failed_step FROM operations WHERE id = $1`, [id])) as any[])[0];
  const finished = (id: string) =>
    waitFor(`operation ${id} to finish`, async () => {
      const o = await op(id);
      return o.status === 'succeeded' || o.status === 'failed' ? o : undefined;
    });

  before(async () => {
    suite = await createSuite('pipeline_retries');
    // The Hetzner client hands every failure straight back (no retries of its own, no 429 waits), so
    // what happens next is the job runner's doing.
    tf = await suite.launch({ overrides: { hetzner: { maxRetries: 0, maxRateLimitRetries: 0 } } });
    api = apiClient(tf.url!, suite.apiToken);
    const res = await api.post('/v1/agents', { name: 'retry-1' });
    agentId = res.body.agent.id;
    expect((await finished(res.body.operation.id)).status).to.equal('succeeded');
  });

  afterEach(() => suite.sim.control.clearFaults());
  after(async () => {
    await suite?.close();
  });

  it('a transient failure is retried with backoff and then succeeds', async () => {
    // Two failed shutdown calls: attempts one and two fail, the third succeeds.
    suite.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers/{id}/actions/shutdown', status: 500, times: 2 }]);
    const res = await api.post(`/v1/agents/${agentId}/stop`);
    const done = await finished(res.body.operation.id);
    expect(done.status, done.error).to.equal('succeeded');
    expect(done.attempts).to.equal(3);
    // Counted as each attempt ends; the retries are all over by now.
    const text = await tf.metrics.registry.getSingleMetricAsString('tailfleet_jobs_total');
    expect(text).to.match(/tailfleet_jobs_total\{queue="stop",outcome="retried"\} 2/);
  });

  it('a 429 pauses the queue and does not spend an attempt', async () => {
    suite.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers/{id}/actions/poweron', status: 429, times: 1 }]);
    const res = await api.post(`/v1/agents/${agentId}/start`);
    const id = res.body.operation.id as string;

    const paused = await waitFor('the queue to be paused and the operation to say why', async () => {
      const ttl = await tf.queues.start.getRateLimitTtl();
      const o = await op(id);
      return ttl > 0 && /Rate limited by hetzner/.test(o.error ?? '') ? ttl : undefined;
    });
    expect(paused).to.be.at.most(2_500);

    const done = await finished(id);
    expect(done.status, done.error).to.equal('succeeded');
    expect(done.attempts).to.equal(1);
    // Counted before the attempt handed the job back, so long before this success.
    const text = await tf.metrics.registry.getSingleMetricAsString('tailfleet_jobs_total');
    expect(text).to.match(/tailfleet_jobs_total\{queue="start",outcome="rate_limited"\} 1/);
  });

  it('a 429 never shortens a longer pause already in force', async () => {
    // A queue of its own, so the long pause holds up none of the other tests.
    const probe = new Queue('pause-probe', { connection: { url: REDIS_URL }, prefix: suite.prefix });
    try {
      await pauseQueue(probe, 30_000);
      await pauseQueue(probe, 1_000);
      expect(await probe.getRateLimitTtl()).to.be.above(25_000);
      await probe.removeRateLimitKey();
      await pauseQueue(probe, 1_000);
      const ttl = await probe.getRateLimitTtl();
      expect(ttl).to.be.above(0).and.at.most(1_000);
    } finally {
      await probe.obliterate({ force: true });
      await probe.close();
    }
  });

  it('a permanent error fails at once, without retries', async () => {
    const stop = await api.post(`/v1/agents/${agentId}/stop`);
    expect((await finished(stop.body.operation.id)).status).to.equal('succeeded');
    // A 403 will not change by asking again.
    suite.sim.control.setFaults([{ method: 'POST', route: '/hetzner/v1/servers/{id}/actions/poweron', status: 403, code: 'forbidden' }]);
    const res = await api.post(`/v1/agents/${agentId}/start`);
    const done = await finished(res.body.operation.id);
    expect(done.status).to.equal('failed');
    expect(done.attempts).to.equal(1);
    // The Operation is written before BullMQ moves the job, so wait for the queue to catch up.
    // Read after the state is failed, so the copy carries the attempt BullMQ counted on that move.
    const jobId = `op-${res.body.operation.id}`;
    const job = await waitFor('the job to fail in the queue', async () =>
      (await tf.queues.start.getJobState(jobId)) === 'failed' ? tf.queues.start.getJob(jobId) : undefined,
    );
    expect(job.attemptsMade).to.equal(1);
    // The lifecycle service put the instance back where it was, ready for another try.
    const agent = await api.get(`/v1/agents/${agentId}`);
    expect(agent.body.instance.status).to.equal('stopped');
  });
});
