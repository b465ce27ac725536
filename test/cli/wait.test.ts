import { expect } from 'chai';
import { TailfleetClient } from '../../src/cli/client';
import { followOperation } from '../../src/cli/wait';

// The follow loop on its own: a scripted server behind an injected fetch, a fake terminal.

const OP = (status: string, progress: number, step: string | null) => ({
  operation: { id: '11111111-2222-4333-8444-555555555555', type: 'stop', status, progress, currentStep: step, error: null, failedStep: null },
});

function scripted(answers: Array<{ status: number; body: unknown }>) {
  const urls: string[] = [];
  const fetchImpl = (async (url: string) => {
    urls.push(url);
    const next = answers.shift()!;
    return new Response(JSON.stringify(next.body), { status: next.status, headers: { 'content-type': 'application/json' } });
  }) as unknown as typeof fetch;
  return { urls, client: new TailfleetClient({ baseUrl: 'http://api.test', token: 't', fetch: fetchImpl }) };
}

function terminal(isTTY: boolean) {
  let text = '';
  return { stream: { isTTY, write: (s: string) => ((text += s), true) } as unknown as NodeJS.WriteStream, text: () => text };
}

describe('CLI: following an operation', () => {
  it('rewrites one line on a terminal with status, percent and step', async () => {
    const { client } = scripted([
      { status: 200, body: OP('queued', 0, null) },
      { status: 200, body: OP('running', 40, 'shutdown') },
      { status: 200, body: OP('succeeded', 100, null) },
    ]);
    const out = terminal(true);
    const res = await followOperation(client, OP('queued', 0, null).operation.id, { intervalMs: 1, timeoutMs: 5000, out: out.stream });
    expect(res.body.operation.status).to.equal('succeeded');
    expect(out.text()).to.equal('\r\x1b[2Kstop 11111111 queued 0%\r\x1b[2Kstop 11111111 running 40% shutdown\r\x1b[2Kstop 11111111 succeeded 100%\n');
  });

  it('reads once, then asks for a long poll (never past its own timeout), and falls back to plain polls when the server refuses it', async () => {
    const { client, urls } = scripted([
      { status: 200, body: OP('running', 50, 'power_on') },
      { status: 400, body: { type: 'urn:tailfleet:problem:validation-error', status: 400, detail: 'unknown parameter wait' } },
      { status: 200, body: OP('failed', 50, null) },
    ]);
    const out = terminal(false);
    const res = await followOperation(client, OP('x', 0, null).operation.id, { intervalMs: 1, timeoutMs: 5000, out: out.stream });
    expect(res.body.operation.status).to.equal('failed');
    expect(urls.map((u) => new URL(u).search)).to.deep.equal(['', '?wait=5', '']);
    expect(out.text()).to.equal('stop 11111111 running 50% power_on\nstop 11111111 failed 50%\n');
  });

  it('reads without waiting when the server has too many long polls open, then long-polls again', async () => {
    const { client, urls } = scripted([
      { status: 200, body: OP('running', 50, 'power_on') },
      { status: 429, body: { type: 'urn:tailfleet:problem:too-many-requests', status: 429, detail: 'too many long polls' } },
      { status: 200, body: OP('running', 60, 'power_on') },
      { status: 200, body: OP('succeeded', 100, null) },
    ]);
    const out = terminal(false);
    const res = await followOperation(client, OP('x', 0, null).operation.id, { intervalMs: 1, timeoutMs: 5000, out: out.stream });
    expect(res.body.operation.status).to.equal('succeeded');
    expect(urls.map((u) => new URL(u).search)).to.deep.equal(['', '?wait=5', '', '?wait=5']);
  });

  it('long-polls for 30 seconds at a time after the first read', async () => {
    const { client, urls } = scripted([
      { status: 200, body: OP('queued', 0, null) },
      { status: 200, body: OP('running', 10, 'shutdown') },
      { status: 200, body: OP('succeeded', 100, null) },
    ]);
    const out = terminal(false);
    await followOperation(client, OP('x', 0, null).operation.id, { intervalMs: 1, timeoutMs: 600_000, out: out.stream });
    expect(urls.map((u) => new URL(u).search)).to.deep.equal(['', '?wait=30', '?wait=30']);
  });
});
