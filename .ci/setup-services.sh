# Brings a Debian 12 or Ubuntu 24.04 machine from "Node and root" to one that runs the test suite
# and the demo, and changes nothing on a machine that already has it all. Sourced by .ci/run (bash);
# run as a command it does ci_setup_services and prints the exports for a shell to eval:
#
#   eval "$(.ci/setup-services.sh)" && npm run demo
#
#   ci_setup_services   installs what is missing from the distribution's packages (postgresql,
#                       redis-server, cloud-init, curl, iproute2, and Debian's chromium), starts PostgreSQL and Redis
#                       when they do not answer, gives the tests a PostgreSQL role with a password,
#                       and exports DATABASE_URL and REDIS_URL.
#   ci_setup_chromium   after `npm ci`: exports CHROMIUM_PATH (Debian's chromium; on Ubuntu, whose
#                       chromium is a snap, Playwright's build of Chromium).
#
# Settings (environment, all optional):
#   PGPORT (5432), REDIS_PORT (6379)  the local PostgreSQL cluster and Redis, on 127.0.0.1
#   DATABASE_URL, REDIS_URL           use these servers as they are: nothing installed, started or set up
#   CHROMIUM_PATH                     use this browser: no chromium installed
#   CI_PG_ROLE (tailfleet_test)       the role the tests log in as (LOGIN CREATEDB pg_signal_backend,
#                                     not a superuser)
#   CI_PG_PASSWORD                    its password; by default a random one kept in
#                                     ${XDG_STATE_HOME:-~/.local/state}/tailfleet/ci-pg-password
#
# PostgreSQL access goes through pg_hba as the distribution ships it (Debian: peer on the local
# socket for the postgres user, scram-sha-256 for 127.0.0.1): the role is created and given its
# password over the socket as the postgres user, and the tests log in over TCP with that password.
# pg_hba.conf is never edited.

CI_PGPORT="${PGPORT:-5432}"
CI_REDIS_PORT="${REDIS_PORT:-6379}"
CI_PG_ROLE="${CI_PG_ROLE:-tailfleet_test}"

ci_log() { echo "ci: $*" >&2; }

ci_wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then ci_log "$name is up"; return 0; fi
    sleep 0.5
  done
  ci_log "$name did not come up"
  return 1
}

# ubuntu for Ubuntu and its derivatives, debian otherwise.
ci_distro() {
  local id="" id_like=""
  # shellcheck disable=SC1091
  [ -r /etc/os-release ] && { id=$(. /etc/os-release && echo "${ID:-}"); id_like=$(. /etc/os-release && echo "${ID_LIKE:-}"); }
  case " $id $id_like " in *" ubuntu "*) echo ubuntu ;; *) echo debian ;; esac
}

ci_has_package() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# apt-get install without starting services: in a container or chroot (no systemd running) a
# package's start script would fail or leave a daemon nobody asked for; this script starts
# PostgreSQL and Redis itself. With systemd running, packages start their services as usual.
ci_apt_install() ( # packages...
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600)
  if [ ! -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    printf '#!/bin/sh\n# Written by .ci/setup-services.sh for the length of one apt-get install.\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  ci_log "apt-get install $*"
  # stdout stays free for the exports printed when this file runs as a command.
  "${apt[@]}" update >&2
  "${apt[@]}" install --no-install-recommends "$@" >&2
)

# The packages the suite needs that this machine lacks (none when all is there: then no apt at all).
ci_missing_packages() {
  local missing=()
  if [ -z "${DATABASE_URL:-}" ] && ! command -v pg_ctlcluster >/dev/null; then missing+=(postgresql); fi
  if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null; then missing+=(redis-server); fi
  # The user-data tests check tailfleet's user data with cloud-init's own code (the distribution's package).
  if ! command -v cloud-init >/dev/null; then missing+=(cloud-init); fi
  # The activity reporter's test runs the reporter itself, which uses curl and ss as an agent's machine does.
  if ! command -v curl >/dev/null; then missing+=(curl); fi
  if ! command -v ss >/dev/null; then missing+=(iproute2); fi
  # Ubuntu's chromium is a snap wrapper; ci_setup_chromium uses Playwright's build there instead.
  if [ -z "${CHROMIUM_PATH:-}" ] && [ "$(ci_distro)" = debian ] && ! ci_has_package chromium; then missing+=(chromium); fi
  echo "${missing[@]}"
}

ci_install_packages() {
  local missing
  read -r -a missing <<<"$(ci_missing_packages)"
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    ci_log "missing packages: ${missing[*]} (run .ci/run as root on Debian/Ubuntu to install them)"
    return 1
  fi
  if [[ " ${missing[*]} " == *" cloud-init "* ]] && [ ! -e /etc/cloud/cloud-init.disabled ]; then
    # Only its parser is wanted: keep cloud-init from configuring this machine at the next boot.
    mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
  fi
  ci_apt_install "${missing[@]}"
}

ci_pg_up() { pg_isready -h 127.0.0.1 -p "$CI_PGPORT" -q; }

ci_start_postgres() {
  ci_pg_up && return 0
  local cluster
  cluster=$(pg_lsclusters --no-header 2>/dev/null | awk -v port="$CI_PGPORT" '$3 == port { print $1, $2; exit }')
  if [ -z "$cluster" ]; then
    ci_log "no PostgreSQL cluster on port $CI_PGPORT (pg_lsclusters); set PGPORT to one that exists"
    return 1
  fi
  ci_log "starting PostgreSQL $cluster"
  # shellcheck disable=SC2086
  pg_ctlcluster --skip-systemctl-redirect $cluster start >&2 || true
  ci_wait_for PostgreSQL ci_pg_up
}

# As the postgres user over the local socket (peer authentication), whatever pg_hba says for TCP.
ci_psql_as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -p "$CI_PGPORT" "$@"
  else sudo -n -u postgres psql -p "$CI_PGPORT" "$@"; fi
}

ci_pg_password() {
  if [ -n "${CI_PG_PASSWORD:-}" ]; then echo "$CI_PG_PASSWORD"; return; fi
  local file="${XDG_STATE_HOME:-$HOME/.local/state}/tailfleet/ci-pg-password"
  if [ ! -s "$file" ]; then
    mkdir -p "$(dirname "$file")"
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$file")
  fi
  cat "$file"
}

# Logs in over TCP with the password and checks the role can end other sessions: the tests drop
# their databases WITH (FORCE), which terminates every session on them, autovacuum's included.
ci_pg_role_ready() { # password
  [ "$(PGPASSWORD=$1 psql -h 127.0.0.1 -p "$CI_PGPORT" -U "$CI_PG_ROLE" -d postgres -Atqc \
    "SELECT pg_has_role('pg_signal_backend', 'USAGE')" 2>/dev/null)" = t ]
}

# The tests' role: LOGIN CREATEDB, member of pg_signal_backend, with a password. Not a superuser.
# Set up only when it is not ready.
ci_setup_pg_role() {
  local password
  password=$(ci_pg_password)
  if ! ci_pg_role_ready "$password"; then
    ci_log "PostgreSQL: role $CI_PG_ROLE with CREATEDB, pg_signal_backend and a password"
    ci_psql_as_postgres -X -q -v ON_ERROR_STOP=1 -v role="$CI_PG_ROLE" -v password="$password" >&2 <<'SQL'
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB INHERIT PASSWORD %L', :'role', :'password') \gexec
SELECT format('GRANT pg_signal_backend TO %I', :'role') \gexec
SQL
    if ! ci_pg_role_ready "$password"; then
      ci_log "cannot log in to 127.0.0.1:$CI_PGPORT as $CI_PG_ROLE with its password; see this cluster's pg_hba.conf"
      return 1
    fi
  fi
  export DATABASE_URL="postgres://$CI_PG_ROLE:$password@127.0.0.1:$CI_PGPORT/postgres"
}

ci_redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$CI_REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

ci_start_redis() {
  ci_redis_up && return 0
  ci_log "starting Redis on port $CI_REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$CI_REDIS_PORT" --save "" --appendonly no >&2
  ci_wait_for Redis ci_redis_up
}

ci_setup_services() {
  ci_install_packages
  if [ -z "${DATABASE_URL:-}" ]; then
    ci_start_postgres
    ci_setup_pg_role
  fi
  if [ -z "${REDIS_URL:-}" ]; then
    ci_start_redis
    export REDIS_URL="redis://127.0.0.1:$CI_REDIS_PORT"
  fi
}

# Needs node_modules (npm ci first). scripts/find-chromium.ts is the one place that knows where a
# Chromium lives; on Ubuntu it would find only the snap wrapper, so Playwright installs its own build
# and the libraries it needs (apt-get via `--with-deps`; downloads from Playwright's CDN).
ci_setup_chromium() {
  if [ -z "${CHROMIUM_PATH:-}" ] && [ "$(ci_distro)" = ubuntu ]; then
    local path
    path=$(node -e "console.log(require('playwright-core').chromium.executablePath())")
    if [ ! -x "$path" ]; then
      ci_log "installing Playwright's Chromium (Ubuntu's chromium package is a snap)"
      npx --no-install playwright-core install --with-deps --no-shell chromium
    fi
    export CHROMIUM_PATH="$path"
  fi
  CHROMIUM_PATH=$(npx --no-install tsx scripts/find-chromium.ts)
  export CHROMIUM_PATH
  ci_log "Chromium: $CHROMIUM_PATH"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  ci_setup_services
  printf 'export DATABASE_URL=%q REDIS_URL=%q\n' "$DATABASE_URL" "$REDIS_URL"
fi
