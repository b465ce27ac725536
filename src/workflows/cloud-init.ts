import { gunzipSync } from 'node:zlib';
import { isDnsLabel } from '../fleet/hostname';

/**
 * First-boot configuration for an agent's server, as cloud-init reads it.
 *
 * The tailnet join is a shell script of its own (never cloud-config, which later parts of the user
 * data would replace: cloud-init merges cloud-config parts with `dict(replace)+list()+str()`). It is
 * written among cloud-init's user scripts under a name that sorts before every other, so the
 * scripts-user stage runs it before the agent's scripts and before `runcmd`.
 */

/** Auth keys and hostnames end up in a shell command line; anything else would need quoting. */
const SHELL_SAFE = /^[A-Za-z0-9_-]+$/;

/**
 * The join's file name in cloud-init's user scripts directory, which runs in name order. `(` is the
 * lowest of the characters cloud-init keeps in a part's file name, and no part of the agent's may
 * sort before this name (see userDataProblem).
 */
export const JOIN_SCRIPT_NAME = '(tailfleet-join)';

/** The agent's own document when it is not MIME (then its parts keep their own names). */
const AGENT_PART_NAME = 'agent-user-data';

export interface UserDataInput {
  authKey: string;
  hostname: string;
  /** The activity reporter to install (src/policy); absent: none. */
  reporter?: ReporterInput;
}

/** Where the machine reports its activity, as whom. The token is the agent's own credential (scope `agent`). */
export interface ReporterInput {
  /** TAILFLEET_PUBLIC_URL: the API as the machine reaches it. */
  url: string;
  agentId: string;
  token: string;
}

/** A public URL goes into a single-quoted shell assignment: no quote, no space, no control character. */
export const REPORTER_URL = /^https?:\/\/[^\s'"\\`$]+$/;
const UUID_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function checkJoinInput(input: UserDataInput): void {
  if (!SHELL_SAFE.test(input.authKey)) throw new Error('Auth key contains characters that are not shell-safe');
  if (!isDnsLabel(input.hostname)) throw new Error(`Hostname ${JSON.stringify(input.hostname)} is not a DNS label`);
  const r = input.reporter;
  if (r && (!REPORTER_URL.test(r.url) || !UUID_SHAPE.test(r.agentId) || !SHELL_SAFE.test(r.token))) {
    throw new Error('Reporter URL, agent id or credential is not shell-safe');
  }
}

/** Where the reporter lives on the machine. */
export const REPORTER_PATHS = {
  script: '/usr/local/lib/tailfleet/reporter.sh',
  env: '/etc/tailfleet/reporter.env',
  busyFile: '/run/tailfleet/busy',
} as const;

/**
 * The activity reporter, run by systemd: `reporter.sh bootstrap` once, after the machine's own
 * cloud-init has finished (`cloud-init status --wait`), reports `done` or `error`; `reporter.sh
 * heartbeat` every minute reports the login and SSH sessions (the larger of `who`'s count and the
 * established connections to port 22, which includes sessions without a terminal), the 1-minute
 * load, and `busy` while the application keeps the busy file. It sends nothing else, and nothing
 * secret but its own credential. Every request is one curl with a timeout; a failed report is
 * not retried (the next minute's heartbeat is the retry), so nothing piles up on the machine.
 */
export function reporterScript(): string {
  return `#!/bin/bash
# tailfleet activity reporter: "bootstrap" once cloud-init has finished, "heartbeat" every minute.
set -u
ENV_FILE="\${TAILFLEET_REPORTER_ENV:-${REPORTER_PATHS.env}}"
# shellcheck disable=SC1090
. "$ENV_FILE"
BUSY_FILE="\${TAILFLEET_BUSY_FILE:-${REPORTER_PATHS.busyFile}}"

post() {
  curl -fsS --max-time 20 -o /dev/null -X POST \\
    -H "Authorization: Bearer $TAILFLEET_AGENT_TOKEN" -H 'Content-Type: application/json' \\
    --data "$2" "$TAILFLEET_URL/v1/agents/$TAILFLEET_AGENT_ID/$1"
}

case "\${1:-heartbeat}" in
  bootstrap)
    if cloud-init status --wait >/dev/null 2>&1; then
      post bootstrap '{"status":"done"}'
    else
      # The last line of the status (e.g. "status: error"), as JSON-safe text.
      detail=$(cloud-init status 2>/dev/null | tail -n 1 | tr -cd 'A-Za-z0-9 :._-' | cut -c1-200)
      post bootstrap "{\\"status\\":\\"error\\",\\"detail\\":\\"$detail\\"}"
    fi
    ;;
  heartbeat)
    logins=$(who 2>/dev/null | wc -l)
    ssh=$(ss -Htn state established '( sport = :22 )' 2>/dev/null | wc -l)
    sessions=$(( logins > ssh ? logins : ssh ))
    load=$(cut -d ' ' -f 1 /proc/loadavg)
    busy=false
    [ -e "$BUSY_FILE" ] && busy=true
    post heartbeat "{\\"busy\\":$busy,\\"sessions\\":$sessions,\\"load\\":$load}"
    ;;
  *)
    echo "usage: $0 bootstrap|heartbeat" >&2
    exit 2
    ;;
esac
`;
}

const REPORTER_UNITS = {
  'tailfleet-reporter.service': [
    '[Unit]',
    'Description=tailfleet activity heartbeat',
    'After=network-online.target',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${REPORTER_PATHS.script} heartbeat`,
  ],
  'tailfleet-reporter.timer': [
    '[Unit]',
    'Description=tailfleet activity heartbeat, every minute',
    '[Timer]',
    'OnBootSec=1min',
    'OnUnitActiveSec=1min',
    'AccuracySec=5s',
    '[Install]',
    'WantedBy=timers.target',
  ],
  'tailfleet-bootstrap-report.service': [
    '[Unit]',
    "Description=tailfleet: report the end of the machine's cloud-init",
    'After=network-online.target',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${REPORTER_PATHS.script} bootstrap`,
  ],
} as const;

/**
 * Shell lines that install the reporter: its credential (mode 0600), the script, the systemd units;
 * the timer starts, and the bootstrap report is queued without waiting (it waits for cloud-init,
 * which is running this very script).
 */
function reporterInstall(r: ReporterInput): string[] {
  const heredoc = (path: string, body: string, mode: string) => [`cat > ${path} <<'TAILFLEET_EOF'`, body.replace(/\n$/, ''), 'TAILFLEET_EOF', `chmod ${mode} ${path}`];
  return [
    '# tailfleet: the activity reporter (its credential reports this agent\'s activity and nothing else).',
    'mkdir -p /etc/tailfleet /usr/local/lib/tailfleet',
    '(umask 077 && cat > ' + REPORTER_PATHS.env + " <<'TAILFLEET_EOF'",
    `TAILFLEET_URL='${r.url.replace(/\/+$/, '')}'`,
    `TAILFLEET_AGENT_ID='${r.agentId}'`,
    `TAILFLEET_AGENT_TOKEN='${r.token}'`,
    'TAILFLEET_EOF',
    ')',
    ...heredoc(REPORTER_PATHS.script, reporterScript(), '0755'),
    ...Object.entries(REPORTER_UNITS).flatMap(([name, lines]) => heredoc(`/etc/systemd/system/${name}`, lines.join('\n'), '0644')),
    'systemctl daemon-reload',
    'systemctl enable --now tailfleet-reporter.timer',
    'systemctl start --no-block tailfleet-bootstrap-report.service',
  ];
}

/**
 * The join script. Safe to run again (cloud-init runs it once per instance, an operator may run it
 * by hand): Tailscale is installed only when missing and `tailscale up` runs only while the node is
 * not up, so a spent single-use key is never offered twice.
 */
function joinScript(upFlags: string | null, reporter?: ReporterInput): string {
  return [
    '#!/bin/sh',
    '# tailfleet: join the tailnet before anything of the agent runs; safe to run again.',
    'set -e',
    ...(upFlags === null
      ? []
      : ['if ! command -v tailscale >/dev/null 2>&1; then', '  curl -fsSL https://tailscale.com/install.sh | sh', 'fi']),
    'systemctl enable --now tailscaled',
    ...(upFlags === null ? [] : [`tailscale status >/dev/null 2>&1 || tailscale up ${upFlags}`]),
    ...(reporter ? reporterInstall(reporter) : []),
    '',
  ].join('\n');
}

/**
 * User data that installs Tailscale and joins the tailnet under `hostname`: the join script.
 * The result contains the auth key: pass it to the Hetzner API and nowhere else (not to logs, not
 * to the database, not to job data).
 */
export function buildUserData(input: UserDataInput): string {
  checkJoinInput(input);
  return joinScript(`--auth-key=${input.authKey} --hostname=${input.hostname}`, input.reporter);
}

/**
 * User data of a server woken from a snapshot: the restored disk already holds the node's identity
 * (its node key and state), so the machine needs no auth key, only tailscaled running.
 */
export function buildWakeUserData(): string {
  return joinScript(null);
}

/**
 * User data of a woken server whose node did not come back (its device was removed or its key
 * revoked): the old state is dropped and the machine joins afresh under the same hostname. Contains
 * the auth key: pass it to the Hetzner API and nowhere else.
 */
export function buildRejoinUserData(input: UserDataInput): string {
  checkJoinInput(input);
  return joinScript(`--reset --force-reauth --auth-key=${input.authKey} --hostname=${input.hostname}`);
}

/** Hetzner refuses user data over 32 KiB; this is after merging the application's own with the join. */
export const USER_DATA_MAX_BYTES = 32 * 1024;

/**
 * The MIME type cloud-init gives a document by its first line (its handlers' INCLUSION_TYPES_MAP),
 * stricter than cloud-init where cloud-init would only warn: the marker is the whole first line
 * (`#cloud-configx` is refused, not read as an empty cloud-config), and nothing precedes it.
 */
function documentType(text: string): string | null {
  const first = (/^[^\r\n]*/.exec(text)?.[0] ?? '').trimEnd();
  if (first.startsWith('#!')) return 'text/x-shellscript';
  if (/^#include(-once)?(\s|$)/i.test(first)) return /^#include-once/i.test(first) ? 'text/x-include-once-url' : 'text/x-include-url';
  if (/^## template:\s*jinja$/i.test(first)) return 'text/jinja2';
  const marker: Record<string, string> = {
    '#cloud-config': 'text/cloud-config',
    '#cloud-config-archive': 'text/cloud-config-archive',
    '#cloud-config-jsonp': 'text/cloud-config-jsonp',
    '#cloud-boothook': 'text/cloud-boothook',
    '#part-handler': 'text/part-handler',
  };
  return marker[first.toLowerCase()] ?? null;
}

/** cloud-init reads user data as MIME when `mime-version:` is in its first 4096 bytes. */
function isMime(text: string): boolean {
  return /mime-version:/i.test(text.slice(0, 4096)) && /^content-type:/im.test(text.split(/\r?\n\r?\n/)[0] ?? '');
}

/**
 * The agent's user data as cloud-init will read it. Hetzner's datasource base64-decodes user data
 * that is valid base64 (the way to send gzip through a JSON string), and cloud-init gunzips it.
 */
function readable(own: string): { text: string } | { problem: string } {
  if (own.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(own)) return { text: own };
  let bytes = Buffer.from(own, 'base64');
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes, { maxOutputLength: 4 * USER_DATA_MAX_BYTES });
    } catch {
      return { problem: 'is base64 of gzip data that does not decompress' };
    }
  }
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
  } catch {
    return { problem: 'is base64 of data that is not UTF-8 text' };
  }
}

/** A file name as cloud-init keeps it (util.clean_filename). */
function cleanFilename(name: string): string {
  return name.replaceAll('/', '_').replace(/[^A-Za-z0-9_.()-]/g, '');
}

/** File names the agent gives its parts: MIME `filename` parameters and cloud-config-archive entries. */
function partNames(text: string): string[] {
  const names: string[] = [];
  for (const m of text.matchAll(/^content-disposition:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*/gim)) {
    for (const p of m[0].matchAll(/filename(\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/gi)) {
      const value = p[2]?.replace(/\\(.)/g, '$1') ?? p[3]!;
      names.push(p[1] ? decodeURIComponent(value.replace(/^[^']*'[^']*'/, '')) : value);
    }
  }
  if (/#cloud-config-archive/i.test(text)) {
    for (const m of text.matchAll(/^[ \t]*(?:-[ \t]+)?["']?filename["']?[ \t]*:[ \t]*(["']?)([^\r\n]*?)\1[ \t]*$/gim)) names.push(m[2]!);
  }
  return names;
}

interface AgentPart {
  text: string;
  /** The MIME type to send it with; null when it is a MIME document of its own. */
  type: string | null;
}

function agentPart(own: string): AgentPart | { problem: string } {
  const read = readable(own);
  if ('problem' in read) return read;
  const { text } = read;
  const type = isMime(text) ? null : documentType(text);
  if (type === null && !isMime(text)) {
    return {
      problem:
        'must be a cloud-init document (#cloud-config, #!, #cloud-boothook, #include, #cloud-config-archive, ' +
        '#cloud-config-jsonp, #part-handler, ## template: jinja), a MIME multipart, or one of these base64-encoded (gzip allowed)',
    };
  }
  for (const name of partNames(text)) {
    if (cleanFilename(name) <= JOIN_SCRIPT_NAME) {
      return { problem: `names a part ${JSON.stringify(name)}, which would sort before tailfleet's join script ${JOIN_SCRIPT_NAME}` };
    }
  }
  // cloud-init runs these from the modules before scripts-user, so before the join.
  if (/text\/x-shellscript-per-/i.test(text)) {
    return { problem: 'has a text/x-shellscript-per-once/per-boot/per-instance part, which would run before the tailnet join; send it as text/x-shellscript' };
  }
  // The join runs in the final stage's scripts-user module; a module list without it drops the join.
  if (/cloud_final_modules/.test(text) && !/scripts[-_]user/.test(text)) {
    return { problem: 'sets cloud_final_modules without scripts-user, the module that runs the tailnet join' };
  }
  return { text, type };
}

/** Why the agent's own user data cannot go with the join (an API answer), or null when it can. */
export function userDataProblem(own: string): string | null {
  const part = agentPart(own);
  return 'problem' in part ? part.problem : null;
}

/**
 * The tailnet join and the application's own user data as one MIME multipart document: the join
 * script first, then the agent's document (its MIME parts nested as they are). Without own user
 * data the join is sent as it is.
 */
export function mergeUserData(join: string, own: string | null | undefined, boundarySeed = 'tailfleet'): string {
  if (!own) return join;
  const agent = agentPart(own);
  if ('problem' in agent) throw new Error(`User data ${agent.problem}`);
  let boundary = `==${boundarySeed}-boundary==`;
  for (let n = 1; join.includes(boundary) || agent.text.includes(boundary); n++) boundary = `==${boundarySeed}-boundary-${n}==`;
  const part = (type: string, name: string, body: string) =>
    [
      `Content-Type: ${type}; charset="utf-8"`,
      'MIME-Version: 1.0',
      'Content-Transfer-Encoding: 8bit',
      `Content-Disposition: attachment; filename="${name}"`,
      '',
      body,
    ].join('\n');
  return [
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    'MIME-Version: 1.0',
    '',
    `--${boundary}`,
    part('text/x-shellscript', JOIN_SCRIPT_NAME, join),
    `--${boundary}`,
    agent.type === null ? agent.text : part(agent.type, AGENT_PART_NAME, agent.text),
    `--${boundary}--`,
    '',
  ].join('\n');
}

// Tailscale auth keys are well under this; the API checks the size with the longest join there can be.
const LONGEST_AUTH_KEY = 'k'.repeat(128);
const LONGEST_HOSTNAME = 'h'.repeat(63);

const LONGEST_REPORTER: ReporterInput = { url: `https://${'u'.repeat(200)}`, agentId: '00000000-0000-4000-8000-000000000000', token: `tf_${'t'.repeat(43)}` };

/** The size of the merged user data with the longest auth key, hostname and reporter, for the API's check. */
export function mergedUserDataBytes(own: string): number {
  return Buffer.byteLength(mergeUserData(buildUserData({ authKey: LONGEST_AUTH_KEY, hostname: LONGEST_HOSTNAME, reporter: LONGEST_REPORTER }), own));
}
