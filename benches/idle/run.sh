#!/usr/bin/env bash
# Idle memory per WebSocket connection: the server's resident memory (VmRSS from
# /proc/<pid>/status) before and after N idle clients connect, divided by N, for
#   channelgate   channelgate, memory broker, route defaults (pings every 20 s)
#   daphne        daphne 4 + channels_rabbitmq (every client joins a group), defaults
#   nchan         nginx + nchan websocket subscribers, 2 workers (optional; Debian
#                 libnginx-mod-nchan, installed when missing)
#   pushpin       Pushpin + a GRIP backend that subscribes each WebSocket to its group
#                 (optional; Debian pushpin, installed when missing); RSS of the runner
#                 and every service it starts (condure, zurl, proxy, handler)
#   channelgate-tls, nchan-tls
#                 the same over TLS (wss://): an ECDSA P-256 certificate made with openssl
#                 for this run, channelgate [tls] listen + certificates, nginx listen ssl
#   channelgate-deflate, nchan-deflate
#                 the clients offer permessage-deflate as Chrome does (cg-load's raw
#                 client) and the server agrees: channelgate [[ws]] compression =
#                 "deflate", nchan with nchan_deflate_message_for_websocket on
# with the same client tool (cg-load hold, with --ca-file for wss, --deflate for -deflate).
#
#   benches/idle/run.sh [--n 10000] [--big] [--targets channelgate,daphne,nchan,pushpin]
#                       [--groups 1] [--settle 3] [--concurrency 100]
#                       [--results FILE] [--quiet-wait 120] [--no-build] [--keep]
#
# --big adds N = 50000 (needs 51k+ open files per process). Appends one JSON line per
# (N, target) to benches/results/idle.jsonl and prints a table. Loopback only.
# CHANNELGATE_BIN: run that channelgate binary instead of building target/release.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RESULTS="$REPO/benches/results/idle.jsonl"
BIN="${CHANNELGATE_BIN:-$REPO/target/release/channelgate}"
LOAD="$REPO/benches/load/target/release/cg-load"
PY="$REPO/.venv/bin/python"
LIB="$REPO/benches/fanout/benchlib.py"
DAPHNE_APP="$REPO/benches/fanout/daphne_app"

N_LIST=(10000)
TARGETS="channelgate,daphne"
GROUPS_N=1         # clients spread over this many groups (URLs)
SETTLE=3           # seconds between the last connection and the reading
WARMUP=100         # connections opened and closed before the baseline reading
CONCURRENCY=100
BUILD=1
KEEP=0
QUIET_PCT=25       # before each measurement, wait until the machine is at most this busy (CPU %) ...
QUIET_WAIT=120     # ... for at most this many seconds, then measure anyway and say so

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
BENCH=idle
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --n) N_LIST=("${2:?}"); shift 2 ;;
        --big) N_LIST=(10000 50000); shift ;;
        --targets) TARGETS="${2:?}"; shift 2 ;;
        --groups) GROUPS_N="${2:?}"; shift 2 ;;
        --settle) SETTLE="${2:?}"; shift 2 ;;
        --concurrency) CONCURRENCY="${2:?}"; shift 2 ;;
        --results) RESULTS="${2:?}"; shift 2 ;;
        --quiet-wait) QUIET_WAIT="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for n in "${N_LIST[@]}"; do num --n "$n"; [ "$n" -ge 1 ] && [ "$n" -le 200000 ] || die "--n must be 1..200000"; done
num --groups "$GROUPS_N"; [ "$GROUPS_N" -ge 1 ] && [ "$GROUPS_N" -le 10000 ] || die "--groups must be 1..10000"
num --settle "$SETTLE"; [ "$SETTLE" -le 120 ] || die "--settle must be at most 120"
num --concurrency "$CONCURRENCY"
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    case "$t" in channelgate|daphne|nchan|pushpin|channelgate-tls|nchan-tls|channelgate-deflate|nchan-deflate) ;;
        *) die "unknown target '$t' (channelgate, daphne, nchan, pushpin, channelgate-tls, nchan-tls, channelgate-deflate, nchan-deflate)" ;; esac
done

# ------------------------------------------------------------------ setup ---
bench_setup daphne channels_rabbitmq
for t in "${TARGET_LIST[@]}"; do
    if [ "$t" = daphne ] && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
        die "daphne's channel layer needs RabbitMQ on 127.0.0.1:5672 (service rabbitmq-server start)"
    fi
done

# The peers' Debian packages (benches/lib.sh), installed when missing.
if [[ ",$TARGETS," == *,nchan* ]] && ! ensure_nchan; then
    die "nginx + nchan unavailable (apt-get install libnginx-mod-nchan failed or not root; see /tmp/cg-idle-apt.log)"
fi
if [[ ",$TARGETS," == *,pushpin,* ]] && ! ensure_pushpin; then
    die "pushpin unavailable (apt-get install pushpin failed or not root; see /tmp/cg-idle-apt.log)"
fi

# File descriptors: the server and the client tool each hold one per connection.
max_n=0; for n in "${N_LIST[@]}"; do [ "$n" -gt "$max_n" ] && max_n=$n; done
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt $((max_n + 1024)) ]; then
    ulimit -Hn $((max_n + 4096)) 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
log "open files limit: $NOFILE"

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
TMP="$(mktemp -d /tmp/cg-idle.XXXXXX)"
SERVER_PID=""

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary
"$PY" "$LIB" machine >"$TMP/machine.json"
"$PY" "$LIB" versions "$REPO" "$BIN" "$PY" >"$TMP/versions.json"
# One ECDSA P-256 server certificate for both TLS targets, signed by a CA of this run.
if [[ ",$TARGETS," == *-tls,* ]]; then make_pki "$TMP/pki"; fi

log_problems() {  # LOG OFFSET OUT
    { tail -c +"$(($2 + 1))" "$1" 2>/dev/null | grep -aiE 'error|warn|panic|traceback|exception|critical' || true; } \
        | "$PY" -c 'import json,sys; print(json.dumps([l.rstrip()[:400] for l in sys.stdin][:50]))' >"$3"
}

WS_PORT=""; ADMIN_PORT=""; SERVER_LOG=""; BACKEND_PID=""; PUSHPIN_SETTINGS=""
# start_server TARGET N; returns 1 (and logs why) when this channelgate does not know a key
# the target needs (the deflate keys are new).
start_server() {
    WS_PORT="$("$PY" "$LIB" freeport)"; ADMIN_PORT=""
    SERVER_LOG="$TMP/$1-$2.log"
    local tls=0 listen_toml="" ssl="" base="${1%-tls}"
    base="${base%-deflate}"
    [[ "$1" == *-tls ]] && tls=1
    if [ "$tls" = 1 ]; then
        # [server] still needs a plain listener; the clients use the [tls] one.
        listen_toml="[\"127.0.0.1:$("$PY" "$LIB" freeport)\"]"
        ssl=" ssl"
    fi
    if [ "$base" = channelgate ]; then
        ADMIN_PORT="$("$PY" "$LIB" freeport)"
        local conf="$TMP/$1-$2.toml"
        [ -n "$listen_toml" ] || listen_toml="[\"127.0.0.1:$WS_PORT\"]"
        cat >"$conf" <<EOF
[server]
listen = $listen_toml
threads = 2
grace_period = "2s"
upgrade_sock = "$TMP/upgrade.sock"
pid_file = "$TMP/channelgate.pid"

[upstream]
servers = ["127.0.0.1:$ADMIN_PORT"]   # nothing is proxied; keeps the TCP check green

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[log]
level = "warn"
access_log = false

[[ws]]
path = "/ws/{g}/"
groups = ["{g}"]
EOF
        if [ "$1" = channelgate-deflate ]; then echo 'compression = "deflate"' >>"$conf"; fi
        if [ "$tls" = 1 ]; then
            cat >>"$conf" <<EOF

[tls]
listen = ["127.0.0.1:$WS_PORT"]
certificates = [{ cert = "$TMP/pki/cert.pem", key = "$TMP/pki/key.pem" }]
EOF
        fi
        if ! "$BIN" check --config "$conf" >/dev/null 2>"$TMP/check.err"; then
            cat "$TMP/check.err" >&2
            if [ "$1" = channelgate-deflate ] && grep -qi 'compression' "$TMP/check.err"; then
                log "WARNING: this channelgate does not know [[ws]] compression yet; skipping $1"
                return 1
            fi
            die "channelgate check failed"
        fi
        "$BIN" run --config "$conf" >"$SERVER_LOG" 2>&1 &
    elif [ "$base" = nchan ]; then
        mkdir -p "$TMP/nginx-tmp"
        local ssl_conf="" deflate_conf=""
        [ "$tls" = 1 ] && ssl_conf="ssl_certificate $TMP/pki/cert.pem; ssl_certificate_key $TMP/pki/key.pem;"
        # nchan agrees to permessage-deflate whenever a client offers it; the directive
        # (server level here: no messages are published) is what a deflate setup sets.
        [ "$1" = nchan-deflate ] && deflate_conf="nchan_deflate_message_for_websocket on;"
        cat >"$TMP/$1-$2.conf" <<EOF
load_module $NCHAN_MODULE;
worker_processes 2;
pid $TMP/nchan.pid;
error_log $SERVER_LOG warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $(($2 + 1024)); }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-tmp/body;
    proxy_temp_path $TMP/nginx-tmp/proxy;
    fastcgi_temp_path $TMP/nginx-tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx-tmp/uwsgi;
    scgi_temp_path $TMP/nginx-tmp/scgi;
    server {
        listen 127.0.0.1:$WS_PORT$ssl;
        $ssl_conf
        $deflate_conf
        location ~ "^/ws/([A-Za-z0-9._-]+)/\$" {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
        }
    }
}
EOF
        "$NGINX" -t -q -c "$TMP/$1-$2.conf" -p "$TMP" -e "$SERVER_LOG" >/dev/null 2>"$TMP/check.err" \
            || { cat "$TMP/check.err" >&2; die "nginx -t failed"; }
        "$NGINX" -c "$TMP/$1-$2.conf" -p "$TMP" -e "$SERVER_LOG" -g 'daemon off;' >>"$SERVER_LOG" 2>&1 &
    elif [ "$1" = pushpin ]; then
        # The GRIP backend (stateless: it answers each WebSocket's OPEN with a subscribe to
        # the group in the path), then pushpin with a config of this run only; see
        # pushpin_config in benches/fanout/benchlib.py.
        local backend_port pub_port dir="$TMP/pushpin-$2"
        backend_port="$("$PY" "$LIB" freeport)"; pub_port="$("$PY" "$LIB" freeport)"
        "$PY" "$REPO/benches/fanout/pushpin_backend.py" "$backend_port" >"$TMP/pushpin-backend-$2.log" 2>&1 &
        BACKEND_PID=$!; PIDS+=("$BACKEND_PID")
        wait_port "$backend_port" 15 "$BACKEND_PID" || { tail -n 20 "$TMP/pushpin-backend-$2.log" >&2; die "pushpin backend did not start"; }
        PUSHPIN_SETTINGS="$("$PY" "$LIB" pushpin-config "$PUSHPIN_TEMPLATE" "$dir" "$WS_PORT" "$pub_port" "$backend_port" "$2")" \
            || die "could not write the pushpin config"
        "$PUSHPIN" --config "$dir/pushpin.conf" --merge-output >"$SERVER_LOG" 2>&1 &
    else
        (cd "$TMP" && PYTHONPATH="$DAPHNE_APP" exec "$PY" -m daphne -b 127.0.0.1 -p "$WS_PORT" -v 0 \
            benchapp.asgi:application) >"$SERVER_LOG" 2>&1 &
    fi
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$WS_PORT" 30 "$SERVER_PID" || { tail -n 20 "$SERVER_LOG" >&2; die "$1 did not start"; }
    if [ "$1" = pushpin ]; then
        local i
        for i in $(seq 100); do grep -q '\[handler\] started' "$SERVER_LOG" && break; sleep 0.1; done
    fi
    log "$1 pid $SERVER_PID${BACKEND_PID:+ ($(tree_names "$SERVER_PID"); backend pid $BACKEND_PID)} ws :$WS_PORT, open files $(awk '/Max open files/ {print $4}' "/proc/$SERVER_PID/limits")"
}

stop_server() {
    stop_tree "$SERVER_PID"
    [ -n "$BACKEND_PID" ] && stop_pid "$BACKEND_PID"
    BACKEND_PID=""
}

urls() {  # TARGET; N-independent: one URL per group (and --ca-file, --deflate as needed)
    local g scheme=ws
    if [[ "$1" == *-tls ]]; then scheme=wss; printf -- '--ca-file\n%s\n' "$TMP/pki/ca.pem"; fi
    if [[ "$1" == *-deflate ]]; then printf -- '--deflate\n'; fi
    for g in $(seq 1 "$GROUPS_N"); do printf -- '--url\n%s://127.0.0.1:%s/ws/idle-%s-%s/\n' "$scheme" "$WS_PORT" "$RUN_ID" "$g"; done
}

measure() {  # TARGET N
    local target="$1" n="$2" tag="$1-$2"
    if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((n + 1024)) ]; then
        log "SKIPPED $tag: needs $((n + 1024)) open files per process, the limit here is $NOFILE (hard limit; not raisable in this container)"
        SKIPPED+=("$tag: not enough file descriptors (limit $NOFILE)")
        return 0
    fi
    start_server "$target" "$n" || { SKIPPED+=("$target-$n (the binary lacks [[ws]] compression)"); return 0; }
    local url_args=()
    mapfile -t url_args < <(urls "$target")
    # Warm-up: first connections load code, start the channel layer, grow pools; they
    # should not count as per-connection memory.
    timeout 120 "$LOAD" connect "${url_args[@]}" -n "$WARMUP" --concurrency "$CONCURRENCY" \
        >"$TMP/$tag.warmup.json" 2>"$TMP/$tag.warmup.err" || log "WARNING: $tag: warm-up failed: $(tail -n 1 "$TMP/$tag.warmup.err")"
    sleep "$SETTLE"
    local offset
    offset="$(stat -c %s "$SERVER_LOG" 2>/dev/null || echo 0)"
    "$PY" "$LIB" proc "$SERVER_PID" >"$TMP/$tag.before.json"
    local subscribed_before=0
    if [ "$target" = pushpin ]; then
        subscribed_before="$("$PY" "$LIB" pushpin-wait-subscribed "$SERVER_LOG" "idle-$RUN_ID-*" 0 1)"
        "$PY" "$LIB" proc "$BACKEND_PID" >"$TMP/$tag.backend-before.json"
    fi

    "$PY" "$LIB" quiet "$QUIET_PCT" "$QUIET_WAIT" >"$TMP/$tag.quiet.json"
    grep -q '"quiet": true' "$TMP/$tag.quiet.json" || log "WARNING: $tag: machine still busy after ${QUIET_WAIT}s: $(cat "$TMP/$tag.quiet.json")"
    local ready="$TMP/$tag.ready" budget=$((60 + n / 40))
    log "$tag: opening $n idle connections"
    timeout $((budget + 600)) "$LOAD" hold "${url_args[@]}" -n "$n" --seconds $((budget + 300)) \
        --concurrency "$CONCURRENCY" --ready-file "$ready" --label "$target" \
        >"$TMP/$tag.hold.json" 2>"$TMP/$tag.hold.err" &
    local hold_pid=$!; PIDS+=("$hold_pid")
    local i
    for i in $(seq $((budget * 10))); do
        [ -s "$ready" ] && break
        kill -0 "$hold_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$ready" ] || { tail -n 5 "$TMP/$tag.hold.err" >&2; die "$tag: clients not ready after ${budget}s"; }
    log "$tag: $(tr -d '\n' <"$ready")"
    if [ -n "$ADMIN_PORT" ]; then
        local connected
        connected="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$ready")"
        "$PY" "$LIB" wait-metric "http://127.0.0.1:$ADMIN_PORT" channelgate_hub_memberships "$connected" 30 >/dev/null \
            || log "WARNING: $tag: not every connection joined its group within 30s"
    fi
    if [ "$target" = pushpin ]; then
        local connected
        connected="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$ready")"
        "$PY" "$LIB" pushpin-wait-subscribed "$SERVER_LOG" "idle-$RUN_ID-*" $((subscribed_before + connected)) 60 >/dev/null \
            || log "WARNING: $tag: not every connection was subscribed to its group within 60s"
    fi
    sleep "$SETTLE"
    "$PY" "$LIB" proc "$SERVER_PID" >"$TMP/$tag.after.json"
    local extra=()
    if [ "$target" = pushpin ]; then
        "$PY" "$LIB" proc "$BACKEND_PID" >"$TMP/$tag.backend-after.json"
        extra+=(backend_before="$TMP/$tag.backend-before.json" backend_after="$TMP/$tag.backend-after.json")
    fi
    kill -TERM "$hold_pid" 2>/dev/null || true
    wait "$hold_pid" || log "WARNING: $tag: cg-load hold exited with $?"
    sleep "$SETTLE"
    "$PY" "$LIB" proc "$SERVER_PID" >"$TMP/$tag.after-close.json" 2>/dev/null || echo '{}' >"$TMP/$tag.after-close.json"
    log_problems "$SERVER_LOG" "$offset" "$TMP/$tag.log-problems.json"
    stop_server
    "$PY" -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' \
        n="$n" groups="$GROUPS_N" settle_s="$SETTLE" warmup_connections="$WARMUP" concurrency="$CONCURRENCY" \
        server_settings="$(case "$target" in
            channelgate) echo 'threads=2, memory broker, [[ws]] defaults (ping 20s, send_queue 256)' ;;
            channelgate-tls) echo 'threads=2, memory broker, [[ws]] defaults (ping 20s, send_queue 256), [tls] listen + certificates (ECDSA P-256), other [tls] keys default' ;;
            nchan) echo 'nginx worker_processes 2 (RSS of master + workers), nchan websocket subscriber defaults' ;;
            nchan-tls) echo 'nginx worker_processes 2 (RSS of master + workers), nchan websocket subscriber defaults, listen ssl (ECDSA P-256), ssl_* defaults' ;;
            channelgate-deflate) echo 'threads=2, memory broker, [[ws]] defaults (ping 20s, send_queue 256) + compression = "deflate"; clients offer permessage-deflate; client_max_window_bits (cg-load raw client)' ;;
            nchan-deflate) echo 'nginx worker_processes 2 (RSS of master + workers), nchan websocket subscriber defaults, nchan_deflate_message_for_websocket on; clients offer permessage-deflate; client_max_window_bits (cg-load raw client)' ;;
            pushpin) echo "$PUSHPIN_SETTINGS (RSS of the runner + every service; the backend separately)" ;;
            *) echo 'daphne 1 process, defaults, channels_rabbitmq defaults' ;;
        esac)" \
        >"$TMP/$tag.params.json"
    "$PY" "$LIB" idle-record results="$RESULTS" run_id="$RUN_ID" target="$target" n="$n" \
        hold_out="$TMP/$tag.hold.json" ready="$ready" before="$TMP/$tag.before.json" after="$TMP/$tag.after.json" \
        after_close="$TMP/$tag.after-close.json" \
        log_problems="$TMP/$tag.log-problems.json" quiet="$TMP/$tag.quiet.json" params="$TMP/$tag.params.json" \
        machine="$TMP/machine.json" versions="$TMP/versions.json" "${extra[@]}"
}

SKIPPED=()
log "run $RUN_ID: N=${N_LIST[*]} targets=$TARGETS groups=$GROUPS_N"
for n in "${N_LIST[@]}"; do
    for target in "${TARGET_LIST[@]}"; do
        measure "$target" "$n"
    done
done

echo
echo "idle memory benchmark $RUN_ID: N=${N_LIST[*]} idle WebSocket connections over $GROUPS_N group(s)"
echo "machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
"$PY" "$LIB" idle-table "$RESULTS" "$RUN_ID"
# The table's ratio lines compare with the plain-text peers; add wss against wss.
"$PY" - "$RESULTS" "$RUN_ID" <<'EOF'
import json, sys
by = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("bench") == "idle" and r.get("run_id") == sys.argv[2]:
        by[(r["n"], r["target"])] = r["summary"].get("bytes_per_connection")
for (n, t), b in sorted(by.items()):
    if t == "channelgate-tls" and b and by.get((n, "nchan-tls")):
        print(f"  N={n} channelgate-tls/nchan-tls bytes per connection: {b / by[(n, 'nchan-tls')]:.2f}")
    if t.endswith("-tls") and b and by.get((n, t[:-4])):
        print(f"  N={n} {t}/{t[:-4]} (wss over ws) bytes per connection: {b / by[(n, t[:-4])]:.2f}")
    if t == "channelgate-deflate" and b and by.get((n, "nchan-deflate")):
        print(f"  N={n} channelgate-deflate/nchan-deflate bytes per connection: {b / by[(n, 'nchan-deflate')]:.2f}")
    if t.endswith("-deflate") and b and by.get((n, t[:-8])):
        print(f"  N={n} {t}/{t[:-8]} (deflate negotiated over not) bytes per connection: {b / by[(n, t[:-8])]:.2f}")
EOF
for s in "${SKIPPED[@]}"; do echo "SKIPPED $s"; done
echo
echo "results appended to ${RESULTS#"$REPO"/} (run_id $RUN_ID)"
