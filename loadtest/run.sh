#!/usr/bin/env bash
# Headless locust run against a loopback `kato serve` (or any KATO URL).
#
# Usage: loadtest/run.sh [locust flags...]        e.g. loadtest/run.sh -u 32 -t 60s
#   KATO_LOADTEST_HOST=http://127.0.0.1:8000  use a running server instead of starting one
#   KATO_LOADTEST_PATTERNS=10000              pre-learn N seeded patterns on the node (started server only)
#   KATO_LOADTEST_OUT=loadtest/results        where <prefix>_stats.csv, ..._history.csv and .html go
#
# Without KATO_LOADTEST_HOST it starts `kato serve` on a free 127.0.0.1 port with a
# fresh data directory (embedded default, one worker), runs locust with
# loadtest/locust.conf (16 users, 30 s), writes CSV and HTML reports and stops the
# server. Exit status: locust's, which is 1 when any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${KATO_LOADTEST_OUT:-loadtest/results}
NODE=${KATO_NODE:-loadtest}
export KATO_NODE=$NODE
mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S)

server_pid=""
data_dir=""
# shellcheck disable=SC2317  # invoked by the EXIT trap, which shellcheck 0.9 does not follow
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [[ -n "$data_dir" ]]; then rm -rf "$data_dir"; fi
}
trap cleanup EXIT

host=${KATO_LOADTEST_HOST:-}
if [[ -z "$host" ]]; then
    data_dir=$(mktemp -d -t kato-loadtest-XXXXXX)
    port=$($PY -c 'from bench.http import free_port; print(free_port())')
    if [[ "${KATO_LOADTEST_PATTERNS:-0}" != "0" ]]; then
        $PY -c "import sys; from pathlib import Path; from bench.corpus import prefill_store; \
prefill_store(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))" "$data_dir" "$NODE" "$KATO_LOADTEST_PATTERNS"
    fi
    LOG_LEVEL=WARNING $PY -m web.cli serve --host 127.0.0.1 --port "$port" --data-dir "$data_dir" &
    server_pid=$!
    host="http://127.0.0.1:$port"
    for _ in $(seq 1 300); do
        if $PY -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=1)" "$host" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then echo "loadtest: server did not start" >&2; exit 1; fi
        sleep 0.2
    done
    echo "loadtest: kato serve on $host (data $data_dir, ${KATO_LOADTEST_PATTERNS:-0} patterns on node $NODE)"
fi

status=0
$PY -m locust --config loadtest/locust.conf --host "$host" \
    --csv "$OUT/kato-$STAMP" --html "$OUT/kato-$STAMP.html" "$@" || status=$?
echo "loadtest: reports in $OUT/kato-$STAMP*; exit status $status"
exit "$status"
