import { credentialsFromEnv, startSimulator, type SimProjectInput } from './index';

// `npm run simulator`: the simulated clouds on SIM_HOST:SIM_PORT, demo-scale timings unless SIM_TIMINGS says otherwise,
// accepting only SIM_HETZNER_TOKEN and the OAuth client SIM_TAILSCALE_CLIENT_ID/SIM_TAILSCALE_CLIENT_SECRET (defaults: SIM_DEFAULT_CREDENTIALS),
// with the SSH keys named in SIM_SSH_KEYS (comma-separated) already in the Hetzner project, as HETZNER_SSH_KEYS needs them.
async function main(): Promise<void> {
  const port = Number(process.env.SIM_PORT ?? 4010);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`SIM_PORT must be a port number, got ${process.env.SIM_PORT}`);
  const seed = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED);
  const timings = process.env.SIM_TIMINGS ? JSON.parse(process.env.SIM_TIMINGS) : undefined;
  const credentials = credentialsFromEnv(process.env);
  const sshKeys = (process.env.SIM_SSH_KEYS ?? '').split(',').map((k) => k.trim()).filter((k) => k !== '');
  const projects = projectsFromEnv(process.env.SIM_HETZNER_PROJECTS);
  const sim = await startSimulator({ port, host: process.env.SIM_HOST ?? '127.0.0.1', seed, timings, credentials, sshKeys, projects });
  const client = credentials.tailscaleClients[0]!;

  process.stdout.write(
    [
      `Cloud simulator listening on ${sim.url}`,
      `  Hetzner API:   ${sim.hetznerUrl}   (HETZNER_API_URL; token: SIM_HETZNER_TOKEN${process.env.SIM_HETZNER_TOKEN ? '' : ` = ${credentials.hetznerTokens[0]}`})`,
      `  Tailscale API: ${sim.tailscaleUrl}   (TAILSCALE_API_URL; OAuth client: SIM_TAILSCALE_CLIENT_ID = ${client.clientId}, SIM_TAILSCALE_CLIENT_SECRET${process.env.SIM_TAILSCALE_CLIENT_SECRET ? '' : ` = ${client.clientSecret}`})`,
      `  Control API:   ${sim.url}/_sim   (state, requests, timings, faults, reset)`,
      ...(projects ? [`  Projects:      ${projects.map((p) => `${p.name} (token ${p.token}${p.maxServers != null ? `, at most ${p.maxServers} servers` : ''})`).join(', ')}   (SIM_HETZNER_PROJECTS)`] : []),
      ...(sshKeys.length > 0 ? [`  SSH keys:      ${sshKeys.join(', ')}   (SIM_SSH_KEYS; use them in HETZNER_SSH_KEYS)`] : []),
      '',
    ].join('\n'),
  );

  const stop = (signal: string) => {
    process.stdout.write(`Cloud simulator stopping (${signal})\n`);
    void sim.close().then(() => process.exit(0));
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

/** `SIM_HETZNER_PROJECTS="a=token-a;maxServers=5,b=token-b"`: several projects, each opened by its own token. */
function projectsFromEnv(value: string | undefined): SimProjectInput[] | undefined {
  if (!value) return undefined;
  return value.split(',').map((entry) => {
    const [head, ...options] = entry.trim().split(';');
    const [name, token] = head.split('=', 2).map((s) => s.trim());
    if (!name || !token) throw new Error(`SIM_HETZNER_PROJECTS: "${entry}" is not name=token`);
    let maxServers: number | null = null;
    for (const option of options) {
      const m = /^maxServers=(\d+)$/.exec(option.trim());
      if (!m) throw new Error(`SIM_HETZNER_PROJECTS: unknown option "${option}" (maxServers=N)`);
      maxServers = Number(m[1]);
    }
    return { name, token, maxServers };
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`Cloud simulator failed to start: ${(err as Error)?.message ?? String(err)}\n`);
  process.exit(1);
});
