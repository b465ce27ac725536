import { Worker } from 'node:worker_threads';

/**
 * Open-loop load: request i is due at start + i / rate whatever happened to the ones before, so a
 * slow server cannot slow the offered load down (no coordinated omission). Latency is counted from
 * the moment a request was due, not from when it left. The generator runs on its own thread so it
 * does not share an event loop with the server it measures.
 */
export interface OpenLoopResult {
  rate: number;
  durationMs: number;
  sent: number;
  ok: number;
  errors: Record<string, number>;
  /** Sorted latencies of the successful requests, ms. */
  latencies: number[];
  /** How late the generator itself sent requests, ms (p99): large values mean the numbers are suspect. */
  sendLagP99Ms: number;
}

export interface OpenLoopRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: string;
}

const GENERATOR = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const { rate, durationMs, requests, expectStatus } = workerData;
// node:http with keep-alive: far cheaper per request than fetch, so the generator keeps its schedule.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const total = Math.floor((rate * durationMs) / 1000);
const latencies = [];
const lags = [];
const errors = {};
let ok = 0, sent = 0, settled = 0;
const start = performance.now() + 20;
function settle() { if (++settled === total) done(); }
function fire(i) {
  const due = start + (i * 1000) / rate;
  lags.push(performance.now() - due);
  const r = requests[i % requests.length];
  sent++;
  const req = http.request(r.url, { method: r.method, headers: { ...r.headers, 'content-length': r.body ? Buffer.byteLength(r.body) : 0 }, agent }, (res) => {
    res.resume();
    res.on('end', () => {
      if (res.statusCode === expectStatus) { ok++; latencies.push(performance.now() - due); }
      else errors[res.statusCode] = (errors[res.statusCode] || 0) + 1;
      settle();
    });
  });
  req.on('error', (err) => { errors[err.code || err.name] = (errors[err.code || err.name] || 0) + 1; settle(); });
  req.end(r.body);
}
let next = 0;
function tick() {
  const now = performance.now();
  while (next < total && start + (next * 1000) / rate <= now) fire(next++);
  if (next < total) setTimeout(tick, Math.max(0, Math.min(1, start + (next * 1000) / rate - performance.now())));
}
function done() {
  latencies.sort((a, b) => a - b);
  lags.sort((a, b) => a - b);
  agent.destroy();
  parentPort.postMessage({ sent, ok, errors, latencies, sendLagP99Ms: lags[Math.floor(lags.length * 0.99)] || 0 });
}
setTimeout(tick, 20);
`;

export function openLoop(
  rate: number,
  durationMs: number,
  requests: OpenLoopRequest[],
  expectStatus: number,
): Promise<OpenLoopResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(GENERATOR, { eval: true, workerData: { rate, durationMs, requests, expectStatus } });
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`open-loop run at ${rate} req/s did not finish`));
    }, durationMs + 60_000);
    worker.once('message', (m: Omit<OpenLoopResult, 'rate' | 'durationMs'>) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve({ rate, durationMs, ...m });
    });
    worker.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
