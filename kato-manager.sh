#!/usr/bin/env bash
# Manage KATO processors started by start.sh: Docker containers (default) or,
# with --local, server processes on this machine.
set -euo pipefail
# shellcheck source=scripts/kato-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/kato-common.sh"

usage() {
    cat <<EOF
Usage: ${0##*/} [--local] COMMAND [options]

Commands:
  start [start.sh options]        start a processor (${0##*/} start --help lists them)
  stop [--id ID|--name NAME|--all]
                                  stop processors (default: all); data is kept
  list                            every processor: id, name, port, pid/container, state
  status [--id ID|--name NAME]    state and /health of processors; exit 0 only when
                                  every one selected is running and healthy
  logs [--id ID|--name NAME] [-f] [-n LINES]
                                  server output of one processor
  shell [--id ID|--name NAME]     a shell inside the container (--local: in the
                                  instance directory, with KATO_URL set)
  restart [--id ID|--name NAME|--all]
                                  stop and start again with the same options
  build                           build the image $KATO_IMAGE (--local: compile the engine)
  clean [--purge]                 forget stopped processors (containers, logs);
                                  --purge deletes their data too
  backup [--id ID|--name NAME] [--node NODE] [--output FILE]
                                  one node's knowledge base to one file (GET /kb/export)
  restore [--id ID|--name NAME] [--node NODE] --input FILE [--replace]
                                  a backup file as a node's knowledge base (POST /kb/import)

--local works on processes of this machine (state under \$KATO_STATE_DIR, default
var/instances); without it Docker is required. A command that needs one processor
takes the only one running when no --id/--name is given. backup and restore send
\$KATO_API_KEY (or the key the processor was started with) as X-API-Key.
EOF
}

LOCAL=0
if [[ ${KATO_LOCAL:-0} == 1 ]]; then LOCAL=1; fi
REST=()
for arg in "$@"; do
    if [[ $arg == --local ]]; then LOCAL=1; else REST+=("$arg"); fi
done
set -- "${REST[@]+"${REST[@]}"}"
[[ $# -gt 0 ]] || { usage >&2; exit 2; }
COMMAND=$1
shift

# ------------------------------------------------------------------ selection

SEL_ID='' SEL_NAME='' SEL_ALL=0 FOLLOW=0 LINES=50 NODE=default_node OUTPUT='' INPUT='' REPLACE=0 PURGE=0
need() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }
parse_options() {  # $1: the options this command takes
    local allowed=$1
    shift
    while [[ $# -gt 0 ]]; do
        [[ " $allowed " == *" $1 "* ]] || usage_error "$COMMAND does not take '$1'"
        case $1 in
            --id) need "$@"; SEL_ID=$2; shift 2 ;;
            --name) need "$@"; SEL_NAME=$2; shift 2 ;;
            --all) SEL_ALL=1; shift ;;
            -f|--follow) FOLLOW=1; shift ;;
            -n|--lines) need "$@"; LINES=$2; shift 2 ;;
            --node) need "$@"; NODE=$2; shift 2 ;;
            --output|-o) need "$@"; OUTPUT=$2; shift 2 ;;
            --input|-i) need "$@"; INPUT=$2; shift 2 ;;
            --replace) REPLACE=1; shift ;;
            --purge) PURGE=1; shift ;;
        esac
    done
    [[ -z $SEL_ID || -z $SEL_NAME ]] || usage_error "give --id or --name, not both"
    [[ $SEL_ALL == 0 || -z $SEL_ID$SEL_NAME ]] || usage_error "--all selects every processor; drop --id/--name"
    if [[ -n $SEL_ID ]] && ! valid_id "$SEL_ID"; then usage_error "invalid --id '$SEL_ID'"; fi
}

# "id<TAB>name" of every processor this mode knows.
known() {
    local id
    if (( LOCAL )); then
        for id in $(local_ids); do
            load_instance "$id" && printf '%s\t%s\n' "$id" "$I_NAME"
        done
    else
        docker ps -a --filter label=kato.processor_id \
            --format '{{.Label "kato.processor_id"}}{{"\t"}}{{.Label "kato.processor_name"}}' | sort
    fi
}

is_running() {
    if (( LOCAL )); then
        running_pid "$1" >/dev/null
    else
        [[ $(docker inspect -f '{{.State.Running}}' "kato-$1" 2>/dev/null) == true ]]
    fi
}

# SELECTED := the processors named by --id/--name/--all (default: $1 = all | one).
select_ids() {
    local default=$1 id name
    SELECTED=()
    while IFS=$'\t' read -r id name; do
        [[ -n $id ]] || continue
        if [[ -n $SEL_ID && $id != "$SEL_ID" ]] || [[ -n $SEL_NAME && $name != "$SEL_NAME" ]]; then
            continue
        fi
        SELECTED+=("$id")
    done < <(known)
    if [[ -n $SEL_ID$SEL_NAME && ${#SELECTED[@]} -eq 0 ]]; then
        if [[ -n $SEL_ID ]]; then die "no processor with id '$SEL_ID'"; fi
        die "no processor named '$SEL_NAME'"
    fi
    if [[ $default == one && -z $SEL_ID$SEL_NAME ]]; then
        local running=()
        for id in "${SELECTED[@]+"${SELECTED[@]}"}"; do
            if is_running "$id"; then running+=("$id"); fi
        done
        case ${#running[@]} in
            1) SELECTED=("${running[0]}") ;;
            0) die "no processor is running" ;;
            *) die "${#running[@]} processors are running (${running[*]}); say which with --id or --name" ;;
        esac
    elif [[ $default == one && ${#SELECTED[@]} -gt 1 ]]; then
        die "several processors are named '$SEL_NAME' (${SELECTED[*]}); say which with --id"
    fi
}

# Base URL of a running processor.
url_of() {
    local port
    if (( LOCAL )); then
        load_instance "$1"
        printf 'http://%s:%s' "$(probe_host "$I_HOST")" "$I_PORT"
    else
        port=$(docker port "kato-$1" 8000/tcp | head -n 1) || die "container kato-$1 publishes no port"
        printf 'http://127.0.0.1:%s' "${port##*:}"
    fi
}

# ------------------------------------------------------------------- commands

cmd_start() {
    if (( LOCAL )); then
        exec "$KATO_ROOT/start.sh" --local "$@"
    fi
    exec "$KATO_ROOT/start.sh" "$@"
}

stop_one() {
    local id=$1 pid i
    if ! (( LOCAL )); then
        docker stop "kato-$id" >/dev/null && docker rm "kato-$id" >/dev/null
        info "stopped $id (container kato-$id removed; volume kato-$id-data kept)"
        return
    fi
    if ! pid=$(running_pid "$id"); then
        rm -f "$(instance_dir "$id")/pid"
        info "$id is not running"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do  # 15 s for a graceful stop, then kill
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        info "$id did not stop within 15 s; killed"
    fi
    rm -f "$(instance_dir "$id")/pid"
    info "stopped $id (pid $pid)"
}

cmd_stop() {
    parse_options "--id --name --all" "$@"
    select_ids all
    if [[ ${#SELECTED[@]} -eq 0 ]]; then info "no processors"; return; fi
    local id
    for id in "${SELECTED[@]}"; do stop_one "$id"; done
}

cmd_list() {
    parse_options "" "$@"
    if ! (( LOCAL )); then
        docker ps -a --filter label=kato.processor_id --format \
            'table {{.Label "kato.processor_id"}}\t{{.Label "kato.processor_name"}}\t{{.Ports}}\t{{.Names}}\t{{.Status}}'
        return
    fi
    local id pid state
    printf '%-20s %-20s %-6s %-8s %-8s %s\n' ID NAME PORT PID STATE URL
    for id in $(local_ids); do
        load_instance "$id"
        if pid=$(running_pid "$id"); then state=running; else state=stopped pid=-; fi
        printf '%-20s %-20s %-6s %-8s %-8s %s\n' "$id" "$I_NAME" "$I_PORT" "$pid" "$state" \
            "http://$(probe_host "$I_HOST"):$I_PORT"
    done
}

cmd_status() {
    parse_options "--id --name --all" "$@"
    select_ids all
    if [[ ${#SELECTED[@]} -eq 0 ]]; then info "no processors"; return 1; fi
    local id url body health bad=0
    for id in "${SELECTED[@]}"; do
        if ! is_running "$id"; then
            info "$id: stopped"
            bad=1
            continue
        fi
        url=$(url_of "$id")
        if body=$(curl -sS --max-time 5 "$url/health" 2>&1); then
            health=$(printf '%s' "$body" | sed -n 's/^{"status":"\([a-z]*\)".*/\1/p')
        else
            health="unreachable (${body//$'\n'/ })"
        fi
        info "$id: running, health ${health:-unknown}, $url"
        [[ $health == healthy ]] || bad=1
    done
    return "$bad"
}

cmd_logs() {
    parse_options "--id --name -f --follow -n --lines" "$@"
    [[ $LINES =~ ^[0-9]+$ ]] || usage_error "-n must be a number"
    select_ids one
    local id=${SELECTED[0]}
    if ! (( LOCAL )); then
        if (( FOLLOW )); then exec docker logs -f --tail "$LINES" "kato-$id"; fi
        exec docker logs --tail "$LINES" "kato-$id"
    fi
    load_instance "$id"
    [[ -f $I_LOG ]] || die "$id has no log yet"
    if (( FOLLOW )); then exec tail -n "$LINES" -f "$I_LOG"; fi
    exec tail -n "$LINES" "$I_LOG"
}

cmd_shell() {
    parse_options "--id --name" "$@"
    select_ids one
    local id=${SELECTED[0]}
    if ! (( LOCAL )); then exec docker exec -it "kato-$id" /bin/bash; fi
    load_instance "$id"
    info "shell in $(instance_dir "$id") (KATO_URL=$(url_of "$id")); exit to leave"
    cd "$(instance_dir "$id")"
    KATO_URL=$(url_of "$id") KATO_ID=$id exec "${SHELL:-/bin/bash}" -i
}

cmd_restart() {
    parse_options "--id --name --all" "$@"
    select_ids all
    if [[ ${#SELECTED[@]} -eq 0 ]]; then die "no processors"; fi
    local id
    for id in "${SELECTED[@]}"; do
        if ! (( LOCAL )); then
            docker restart "kato-$id" >/dev/null
            info "restarted $id"
            continue
        fi
        stop_one "$id"
        load_instance "$id"
        # The key may have come from the environment rather than --api-key: keep it.
        (
            if [[ -n $I_API_KEY ]]; then export KATO_API_KEY=$I_API_KEY; fi
            "$KATO_ROOT/start.sh" "${I_ARGS[@]}"
        )
    done
}

cmd_build() {
    parse_options "" "$@"
    if (( LOCAL )); then
        cd "$KATO_ROOT"
        exec "$PYTHON" setup.py build_ext --inplace
    fi
    require_docker
    exec docker build -t "$KATO_IMAGE" "$KATO_ROOT"
}

cmd_clean() {
    parse_options "--purge" "$@"
    local id dir
    if ! (( LOCAL )); then
        for id in $(known | cut -f1); do
            is_running "$id" && continue
            docker rm "kato-$id" >/dev/null && info "removed container kato-$id"
            if (( PURGE )); then docker volume rm "kato-$id-data" >/dev/null 2>&1 && info "removed volume kato-$id-data"; fi
        done
        return 0
    fi
    for id in $(local_ids); do
        is_running "$id" && continue
        dir=$(instance_dir "$id")
        if (( PURGE )); then
            rm -rf -- "$dir"  # an outside --data-dir is never touched
            info "removed $id and its data ($dir)"
        else
            rm -f -- "$dir/instance.env" "$dir/pid" "$dir/kato.log"
            info "forgot $id (its data, if any, is kept)"
        fi
    done
}

# Send a request to one processor; prints the body, fails on a non-2xx status.
request() {  # $1: id, rest: curl arguments
    local id=$1 out code
    shift
    out=$(mktemp)
    code=$(kato_curl -o "$out" -w '%{http_code}' "$@") || { rm -f "$out"; die "request to $id failed"; }
    if [[ $code != 2* ]]; then
        printf '%s: error: %s answered HTTP %s: %s\n' "${0##*/}" "$id" "$code" "$(head -c 2000 "$out")" >&2
        rm -f "$out"
        exit 1
    fi
    RESPONSE_FILE=$out
}

cmd_backup() {
    parse_options "--id --name --node --output -o" "$@"
    select_ids one
    local id=${SELECTED[0]} url stamp
    (( LOCAL )) && load_instance "$id"
    url=$(url_of "$id")
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    OUTPUT=${OUTPUT:-backups/$id-${NODE//[^A-Za-z0-9_.-]/_}-$stamp.kato-kb.json}
    mkdir -p "$(dirname "$OUTPUT")"
    request "$id" "$url/kb/export?node_id=$(urlencode "$NODE")"
    mv -- "$RESPONSE_FILE" "$OUTPUT"
    info "backed up node '$NODE' of $id to $OUTPUT"
}

cmd_restore() {
    parse_options "--id --name --node --input -i --replace" "$@"
    [[ -n $INPUT ]] || usage_error "restore needs --input FILE"
    [[ -f $INPUT ]] || die "no such file: $INPUT"
    select_ids one
    local id=${SELECTED[0]} url replace=false
    (( LOCAL )) && load_instance "$id"
    url=$(url_of "$id")
    (( REPLACE )) && replace=true
    request "$id" -X POST -H 'Content-Type: application/json' --data-binary "@$INPUT" \
        "$url/kb/import?replace=$replace&node_id=$(urlencode "$NODE")"
    info "$(cat "$RESPONSE_FILE")"
    rm -f "$RESPONSE_FILE"
}

# --------------------------------------------------------------------- main

case $COMMAND in
    -h|--help|help) usage; exit 0 ;;
    start|stop|list|status|logs|shell|restart|build|clean|backup|restore) ;;
    *) usage_error "unknown command '$COMMAND'" ;;
esac
if ! (( LOCAL )) && [[ $COMMAND != start ]]; then
    require_docker  # start.sh says the same for start
fi
if [[ $COMMAND != start && $COMMAND != build ]]; then require_tool curl; fi
"cmd_$COMMAND" "$@"
