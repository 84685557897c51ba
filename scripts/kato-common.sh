# shellcheck shell=bash
# Shared by start.sh and kato-manager.sh (sourced, never run).
#
# Local instances (--local) live under $KATO_STATE_DIR (default <repo>/var/instances),
# one directory per processor id:
#   instance.env  the instance's settings as shell assignments (mode 600: it may hold the API key)
#   pid           the server's process id while it runs
#   kato.log      server output
#   data/         embedded storage (unless --data-dir named another place)
# Docker instances are containers named kato-<id>, labelled kato.processor_id / kato.processor_name.

KATO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KATO_STATE_DIR=${KATO_STATE_DIR:-$KATO_ROOT/var/instances}
KATO_IMAGE=${KATO_IMAGE:-kato:latest}
KATO_NETWORK=${KATO_NETWORK:-kato-network}
PYTHON=${PYTHON:-python3}

# Exit statuses: 1 failure, 2 usage, 3 Docker unavailable.
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s (see --help)\n' "${0##*/}" "$*" >&2; exit 2; }
info() { printf '%s\n' "$*"; }

# Docker must be installed and its daemon reachable; otherwise say so and exit 3.
require_docker() {
    local why
    if ! command -v docker >/dev/null 2>&1; then
        why="the 'docker' command is not installed"
    elif ! why=$(timeout 20 docker info 2>&1 >/dev/null); then
        why=$(printf '%s' "$why" | tr -s '\n' ' ' | cut -c1-200)
        why="the Docker daemon is not reachable (docker info: ${why:-failed})"
    else
        return 0
    fi
    printf '%s: error: Docker is not available: %s.\n' "${0##*/}" "$why" >&2
    printf '%s: run KATO directly on this machine with --local, or install and start Docker.\n' "${0##*/}" >&2
    exit 3
}

require_tool() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed"
}

valid_id() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ]]; }

valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (( $1 >= 1 && $1 <= 65535 )); }

instance_dir() { printf '%s/%s' "$KATO_STATE_DIR" "$1"; }

# Ids of every local instance ever started (running or not), sorted.
local_ids() {
    local d
    [[ -d $KATO_STATE_DIR ]] || return 0
    for d in "$KATO_STATE_DIR"/*/; do
        [[ -f $d/instance.env ]] && basename "$d"
    done | sort
}

# Load an instance's settings (written by start.sh) into the I_* variables the
# scripts read; false when it has none.
# shellcheck disable=SC2034
load_instance() {
    local file
    file="$(instance_dir "$1")/instance.env"
    [[ -f $file ]] || return 1
    I_ID='' I_NAME='' I_PORT='' I_HOST='' I_DATA_DIR='' I_LOG='' I_API_KEY=''
    I_ARGS=()
    # shellcheck source=/dev/null
    source "$file"
}

# The server's pid when it is running, else nothing (and false).
running_pid() {
    local pid
    pid=$(cat "$(instance_dir "$1")/pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Address to reach a server that listens on $1.
probe_host() { case $1 in 0.0.0.0|'') printf '127.0.0.1' ;; ::) printf '[::1]' ;; *) printf '%s' "$1" ;; esac; }

# GET/POST through curl with the API key when one is known ($KATO_API_KEY wins).
# The key goes to curl on stdin as a header file, never on a command line.
kato_curl() {
    local key=${KATO_API_KEY:-${I_API_KEY:-}}
    if [[ -n $key ]]; then
        printf 'X-API-Key: %s\n' "$key" | curl -sS -H @- "$@"
    else
        curl -sS "$@"
    fi
}

# Percent-encode $1 byte by byte (UTF-8 stays UTF-8) for a query string.
urlencode() {
    local LC_ALL=C s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~-]) out+=$c ;;
            *) printf -v c '%%%02X' "'$c"; out+=$c ;;
        esac
    done
    printf '%s' "$out"
}
