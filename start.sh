#!/usr/bin/env bash
# Start one KATO processor: a Docker container (default) or, with --local, a
# `kato serve` process on this machine. Waits until it answers /health.
# kato-manager.sh lists, stops, restarts and backs up what this starts.
set -euo pipefail
# shellcheck source=scripts/kato-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/kato-common.sh"

usage() {
    cat <<EOF
Usage: ${0##*/} [--local] [options]

Start one KATO processor and wait until it is healthy.

Identity and transport:
  --id ID                 processor id, PROCESSOR_ID (default: primary); names the
                          container (kato-ID) or the local instance
  --name NAME             processor name, PROCESSOR_NAME (default: KatoProcessor)
  --port PORT             port on this machine (default: 8000)
  --host ADDR             --local only: listen address (default: 127.0.0.1)
  --log-level LEVEL       DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)
  --api-key KEY           require this key on every endpoint but /health and the
                          pings (KATO_API_KEY; prefer exporting KATO_API_KEY, which
                          keeps the key out of the process list)
Engine defaults (each session may override them):
  --max-predictions N     MAX_PREDICTIONS (1..10000, default 100)
  --recall-threshold X    RECALL_THRESHOLD (0..1, default 0.1)
  --persistence N         PERSISTENCE, emotive window (1..100, default 5)
  --max-seq-length N      MAX_PATTERN_LENGTH, auto-learn at N events (0 = off)
  --indexer-type TYPE     INDEXER_TYPE (VI, LSH, ANNOY, FAISS; default VI)
  --stm-mode MODE         STM_MODE (CLEAR or ROLLING)
Where it runs:
  --local                 run on this machine (no Docker); state under
                          \$KATO_STATE_DIR (default var/instances/ID)
  --data-dir DIR          --local only: embedded storage (default var/instances/ID/data)
  --image IMAGE           Docker image (default: \$KATO_IMAGE or kato:latest)
  --wait SECONDS          how long to wait for /health (default: 60)
  -h, --help              this text

Storage: the embedded default needs no server. To use Redis, ClickHouse and
Qdrant servers, export their settings (KATO_STORAGE, REDIS_URL, CLICKHOUSE_*,
QDRANT_*, see README); they are passed on to the processor.
EOF
}

ID=primary NAME=KatoProcessor PORT=8000 HOST=127.0.0.1 LOG_LEVEL_OPT=INFO API_KEY=${KATO_API_KEY:-}
LOCAL=0 DATA_DIR='' WAIT=60 IMAGE=$KATO_IMAGE
ENGINE_ENV=()
ARGS=("$@")

need() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --id) need "$@"; ID=$2; shift 2 ;;
        --name) need "$@"; NAME=$2; shift 2 ;;
        --port) need "$@"; PORT=$2; shift 2 ;;
        --host) need "$@"; HOST=$2; shift 2 ;;
        --log-level) need "$@"; LOG_LEVEL_OPT=${2^^}; shift 2 ;;
        --api-key) need "$@"; API_KEY=$2; shift 2 ;;
        --max-predictions) need "$@"; ENGINE_ENV+=("MAX_PREDICTIONS=$2"); shift 2 ;;
        --recall-threshold) need "$@"; ENGINE_ENV+=("RECALL_THRESHOLD=$2"); shift 2 ;;
        --persistence) need "$@"; ENGINE_ENV+=("PERSISTENCE=$2"); shift 2 ;;
        --max-seq-length) need "$@"; ENGINE_ENV+=("MAX_PATTERN_LENGTH=$2"); shift 2 ;;
        --indexer-type) need "$@"; ENGINE_ENV+=("INDEXER_TYPE=$2"); shift 2 ;;
        --stm-mode) need "$@"; ENGINE_ENV+=("STM_MODE=$2"); shift 2 ;;
        --local) LOCAL=1; shift ;;
        --data-dir) need "$@"; DATA_DIR=$2; shift 2 ;;
        --image) need "$@"; IMAGE=$2; shift 2 ;;
        --wait) need "$@"; WAIT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option: $1" ;;
    esac
done

valid_id "$ID" || usage_error "--id must be letters, digits, '.', '_' or '-' (at most 63), got '$ID'"
valid_port "$PORT" || usage_error "--port must be 1..65535, got '$PORT'"
[[ $WAIT =~ ^[0-9]+$ ]] || usage_error "--wait must be a number of seconds, got '$WAIT'"
case $LOG_LEVEL_OPT in DEBUG|INFO|WARNING|ERROR|CRITICAL) ;; *) usage_error "--log-level must be DEBUG, INFO, WARNING, ERROR or CRITICAL" ;; esac
# Engine values are checked by the service itself, which refuses to start and names the setting.
# The key reaches the processor through the environment, never through a command line.
if [[ -n $API_KEY ]]; then export KATO_API_KEY=$API_KEY; fi

ENV=("PROCESSOR_ID=$ID" "PROCESSOR_NAME=$NAME" "LOG_LEVEL=$LOG_LEVEL_OPT" "${ENGINE_ENV[@]}")
# Server settings of the caller's environment travel to the processor (for Docker; a local child inherits them).
PASS_THROUGH=(KATO_STORAGE SERVICE_NAME LOG_FORMAT SESSION_TTL SESSION_AUTO_EXTEND KATO_MAX_SESSIONS
              REDIS_URL REDIS_TLS CLICKHOUSE_HOST CLICKHOUSE_PORT CLICKHOUSE_DB CLICKHOUSE_USER
              CLICKHOUSE_PASSWORD CLICKHOUSE_SECURE QDRANT_HOST QDRANT_PORT QDRANT_API_KEY QDRANT_HTTPS)

# Poll /health until it answers 200 or the process is gone; $1 = pid to watch (local) or "".
wait_healthy() {
    local pid=$1 url deadline
    url="http://$(probe_host "$HOST"):$PORT"
    deadline=$((SECONDS + WAIT))
    while (( SECONDS < deadline )); do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 2 "$url/health" 2>/dev/null; then
            # The process on the port must be ours, not some other server.
            curl -fsS --max-time 2 "$url/kato-api/ping" 2>/dev/null | grep -qF "\"id\":\"$ID\"" && return 0
            printf '%s: error: port %s answers, but not as processor %s\n' "${0##*/}" "$PORT" "$ID" >&2
            return 1
        fi
        sleep 0.2
    done
    printf '%s: error: no healthy answer from %s/health within %ss\n' "${0##*/}" "$url" "$WAIT" >&2
    return 1
}

start_local() {
    local dir pid log
    require_tool curl
    command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (set PYTHON to the interpreter that has KATO installed)"
    dir=$(instance_dir "$ID")
    if pid=$(running_pid "$ID"); then
        die "processor '$ID' is already running (pid $pid); stop it first: kato-manager.sh --local stop --id $ID"
    fi
    port_in_use "$PORT" && die "port $PORT is already in use on this machine; choose another with --port"
    mkdir -p "$dir"
    DATA_DIR=${DATA_DIR:-$dir/data}
    log=$dir/kato.log
    # Plain assignments quoted with %q (one line each), so sourcing them in a function sets globals.
    (
        umask 077
        {
            printf 'I_ID=%q\nI_NAME=%q\nI_PORT=%q\nI_HOST=%q\nI_DATA_DIR=%q\nI_LOG=%q\nI_API_KEY=%q\n' \
                "$ID" "$NAME" "$PORT" "$HOST" "$DATA_DIR" "$log" "$API_KEY"
            printf 'I_ARGS=('
            printf ' %q' "${ARGS[@]+"${ARGS[@]}"}"
            printf ' )\n'
        } > "$dir/instance.env"
    )
    printf '\n=== %s start.sh --local %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ID" >> "$log"
    (
        cd "$KATO_ROOT"
        export "${ENV[@]}" PYTHONPATH="$KATO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
        exec nohup "$PYTHON" -m web.cli serve --host "$HOST" --port "$PORT" --data-dir "$DATA_DIR" \
            </dev/null >>"$log" 2>&1
    ) &
    pid=$!
    printf '%s\n' "$pid" > "$dir/pid"
    if ! wait_healthy "$pid"; then
        printf '%s: error: processor %s did not start; last lines of %s:\n' "${0##*/}" "$ID" "$log" >&2
        tail -n 20 "$log" >&2 || true
        kill "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
        exit 1
    fi
    info "kato processor '$ID' ($NAME) running on http://$(probe_host "$HOST"):$PORT (pid $pid, local)"
    info "  log: $log"
    info "  data: $DATA_DIR"
}

start_docker() {
    local container=kato-$ID var
    require_docker
    require_tool curl
    [[ $HOST == 127.0.0.1 ]] || usage_error "--host is for --local; a container listens on 0.0.0.0 inside"
    [[ -z $DATA_DIR ]] || usage_error "--data-dir is for --local; a container keeps its data in volume $container-data"
    if docker container inspect "$container" >/dev/null 2>&1; then
        die "container $container already exists; stop it first: kato-manager.sh stop --id $ID"
    fi
    docker network inspect "$KATO_NETWORK" >/dev/null 2>&1 || docker network create "$KATO_NETWORK" >/dev/null
    local run=(docker run -d --name "$container" --restart unless-stopped --network "$KATO_NETWORK"
               --label "kato.processor_id=$ID" --label "kato.processor_name=$NAME"
               -p "$PORT:8000" -v "$container-data:/home/kato/data"
               --log-opt max-size=10m --log-opt max-file=3)
    for var in "${ENV[@]}"; do run+=(-e "$var"); done
    for var in "${PASS_THROUGH[@]}"; do
        if [[ -n ${!var:-} ]]; then run+=(-e "$var"); fi
    done
    # -e NAME without a value copies it from this environment: the key stays off command lines.
    if [[ -n $API_KEY ]]; then run+=(-e KATO_API_KEY); fi
    "${run[@]}" "$IMAGE" >/dev/null
    if ! wait_healthy ""; then
        docker logs --tail 20 "$container" >&2 || true
        die "container $container did not become healthy (it is left for inspection: kato-manager.sh logs --id $ID)"
    fi
    info "kato processor '$ID' ($NAME) running on http://127.0.0.1:$PORT (container $container)"
}

if (( LOCAL )); then
    start_local
else
    start_docker
fi
