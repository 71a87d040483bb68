#!/usr/bin/env bash
# Fan-out benchmark: N WebSocket clients in one group, M messages published to the group
# at a fixed rate and as fast as possible, delivered by
#   channelgate-memory  channelgate, memory broker, published with POST /publish/<group>
#   channelgate-amqp    channelgate, RabbitMQ broker, published to RabbitMQ (msgpack)
#   channelgate-tls     channelgate-memory over TLS (wss://, ECDSA P-256 certificate of the run)
#   channelgate-deflate channelgate-memory with [[ws]] compression = "deflate"; the clients
#                       offer permessage-deflate as Chrome does (raw client)
#   daphne              daphne 4 + channels_rabbitmq, published to RabbitMQ (same publisher)
#   nchan               nginx + nchan (Debian libnginx-mod-nchan, installed when missing),
#                       published with an HTTP POST of the text to its publisher location
#   nchan-tls           nchan over TLS (listen ... ssl, the same certificate)
#   nchan-deflate       nchan with nchan_deflate_message_for_websocket on; clients offer deflate
#   pushpin             Pushpin (Debian pushpin, installed when missing) with a GRIP backend
#                       (pushpin_backend.py) that subscribes each WebSocket to its group,
#                       published with Pushpin's HTTP publish API (one ws-message item per POST)
# with the same client tool (cg-load) and the same payload.
#
#   benches/fanout/run.sh [--n 1000] [--big] [--messages 100] [--rate 100] [--case N:RATE:M]...
#                         [--steady] [--deflate] [--targets LIST] [--scenarios rate,burst]
#                         [--payload text|awx] [--client tungstenite|raw] [--inflate-every 10] [--size 250]
#                         [--duration 120] [--concurrency 100] [--results FILE]
#                         [--quiet-wait 120] [--no-build] [--keep]
#
# --steady: cases 1000:100:1000 and 10000:10:300 (N clients : msg/s in `rate` : messages),
#           targets channelgate-memory,channelgate-tls,nchan,nchan-tls.
# --deflate: case 1000:100:1000, AWX-like job events (--payload awx), raw clients,
#           targets channelgate-memory,channelgate-deflate,nchan,nchan-deflate.
# --big adds N = 10000 to --n. --case, or --n/--rate/--messages/--big, replace a preset's
# cases; --targets, --payload and --client given after a preset override it. Appends one JSON
# line per (case, scenario, target) to benches/results/fanout.jsonl and prints a table.
# Loopback only. CHANNELGATE_BIN: run that binary instead of building target/release.
# See README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/benches/fanout"
RESULTS="$REPO/benches/results/fanout.jsonl"
BIN="${CHANNELGATE_BIN:-$REPO/target/release/channelgate}"
LOAD="$REPO/benches/load/target/release/cg-load"
PY="$REPO/.venv/bin/python"
LIB="$HERE/benchlib.py"

CASES=()           # "N:RATE:M" each: from --case, else --n/--rate/--messages/--big, else a preset's
PRESET_CASES=()
EXPLICIT_N=0
N_LIST=(1000)
MESSAGES=100
RATE=100
SIZE=250
PAYLOAD=text       # text: "<ns> <seq> xxx..." of --size bytes; awx: AWX-like job events
CLIENT=tungstenite # cg-load's client: tungstenite, or raw (counts wire bytes; implied by -deflate targets)
INFLATE_EVERY=10   # -deflate targets: client i inflates (reads "t", "seq") when i mod this = 0; the rest count
DURATION=120       # per scenario: the clients give up this long after READY (at least M/rate + 60 s)
IDLE=10            # ... or when nothing arrived for this long once messages flowed
CONCURRENCY=100    # connection attempts in flight
TARGETS="channelgate-memory,channelgate-amqp,daphne,nchan,pushpin"
SCENARIOS="rate,burst"
BUILD=1
KEEP=0
QUIET_PCT=25       # before each measurement, wait until the machine is at most this busy (CPU %) ...
QUIET_WAIT=120     # ... for at most this many seconds, then measure anyway and say so
ALL_TARGETS="channelgate-memory channelgate-amqp channelgate-tls channelgate-deflate daphne nchan nchan-tls nchan-deflate pushpin"

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
BENCH=fanout
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --n) N_LIST=("${2:?}"); EXPLICIT_N=1; shift 2 ;;
        --big) N_LIST=("${N_LIST[0]}" 10000); EXPLICIT_N=1; shift ;;
        --messages) MESSAGES="${2:?}"; EXPLICIT_N=1; shift 2 ;;
        --rate) RATE="${2:?}"; EXPLICIT_N=1; shift 2 ;;
        --case) CASES+=("${2:?}"); shift 2 ;;
        --steady)
            PRESET_CASES=(1000:100:1000 10000:10:300)
            TARGETS="channelgate-memory,channelgate-tls,nchan,nchan-tls"; shift ;;
        --deflate)
            PRESET_CASES=(1000:100:1000); PAYLOAD=awx; CLIENT=raw
            TARGETS="channelgate-memory,channelgate-deflate,nchan,nchan-deflate"; shift ;;
        --size) SIZE="${2:?}"; shift 2 ;;
        --payload) PAYLOAD="${2:?}"; shift 2 ;;
        --client) CLIENT="${2:?}"; shift 2 ;;
        --inflate-every) INFLATE_EVERY="${2:?}"; shift 2 ;;
        --targets) TARGETS="${2:?}"; shift 2 ;;
        --scenarios) SCENARIOS="${2:?}"; shift 2 ;;
        --duration) DURATION="${2:?}"; shift 2 ;;
        --concurrency) CONCURRENCY="${2:?}"; shift 2 ;;
        --results) RESULTS="${2:?}"; shift 2 ;;
        --quiet-wait) QUIET_WAIT="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

if [ "${#CASES[@]}" = 0 ] && [ "$EXPLICIT_N" = 0 ] && [ "${#PRESET_CASES[@]}" != 0 ]; then
    CASES=("${PRESET_CASES[@]}")
elif [ "${#CASES[@]}" = 0 ]; then
    for n in "${N_LIST[@]}"; do CASES+=("$n:$RATE:$MESSAGES"); done
fi
for c in "${CASES[@]}"; do
    IFS=: read -r n r m <<<"$c"
    [ -n "${m:-}" ] || die "--case must look like N:RATE:M (got '$c')"
    num "N in --case $c" "$n"; [ "$n" -ge 1 ] && [ "$n" -le 100000 ] || die "N must be 1..100000 (--case $c)"
    num "M in --case $c" "$m"; [ "$m" -ge 1 ] && [ "$m" -le 1000000 ] || die "M must be 1..1000000 (--case $c)"
    [[ "$r" =~ ^[0-9]+(\.[0-9]+)?$ ]] && [ "${r%.*}" -ge 1 ] || die "RATE must be a positive number of messages/s (--case $c)"
done
num --size "$SIZE"; [ "$SIZE" -ge 32 ] && [ "$SIZE" -le 65536 ] || die "--size must be 32..65536"
num --duration "$DURATION"; [ "$DURATION" -ge 5 ] && [ "$DURATION" -le 1800 ] || die "--duration must be 5..1800 (seconds)"
num --concurrency "$CONCURRENCY"
num --inflate-every "$INFLATE_EVERY"; [ "$INFLATE_EVERY" -ge 1 ] || die "--inflate-every must be at least 1"
case "$PAYLOAD" in text|awx) ;; *) die "--payload must be text or awx" ;; esac
case "$CLIENT" in tungstenite|raw) ;; *) die "--client must be tungstenite or raw" ;; esac
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
IFS=, read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for t in "${TARGET_LIST[@]}"; do
    [[ " $ALL_TARGETS " == *" $t "* ]] || die "unknown target '$t' ($ALL_TARGETS)"
done
for s in "${SCENARIO_LIST[@]}"; do
    case "$s" in rate|burst) ;; *) die "unknown scenario '$s' (rate, burst)" ;; esac
done

# ------------------------------------------------------------------ setup ---
bench_setup daphne channels_rabbitmq msgpack
[ -x "$BIN" ] || die "no $BIN"
[ -x "$LOAD" ] || die "no $LOAD"

need_amqp=0
for t in "${TARGET_LIST[@]}"; do case "$t" in channelgate-amqp|daphne) need_amqp=1 ;; esac; done
if [ "$need_amqp" = 1 ] && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    die "RabbitMQ is not listening on 127.0.0.1:5672 (start it: service rabbitmq-server start)"
fi

# The peers' Debian packages (benches/lib.sh), installed when missing, else skipped.
drop_targets() {  # PREFIX: remove PREFIX and PREFIX-* from TARGET_LIST
    local t kept=()
    for t in "${TARGET_LIST[@]}"; do [[ "$t" == "$1" || "$t" == "$1"-* ]] || kept+=("$t"); done
    TARGET_LIST=("${kept[@]}")
}
if [[ ",$TARGETS," == *,nchan* ]] && ! ensure_nchan; then
    log "WARNING: nginx + nchan unavailable (apt-get install libnginx-mod-nchan failed or not root); skipping the nchan targets"
    drop_targets nchan
fi
if [[ ",$TARGETS," == *,pushpin,* ]] && ! ensure_pushpin; then
    log "WARNING: pushpin unavailable (apt-get install pushpin failed or not root); skipping the pushpin target"
    drop_targets pushpin
fi

# File descriptors: each server and the client tool hold one per connection.
max_n=0; for c in "${CASES[@]}"; do n="${c%%:*}"; [ "$n" -gt "$max_n" ] && max_n=$n; done
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt $((max_n + 1024)) ]; then
    ulimit -Hn $((max_n + 4096)) 2>/dev/null \
        || die "N=$max_n needs $((max_n + 1024)) open files per process; the hard limit is $hard and cannot be raised here"
fi
ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
TMP="$(mktemp -d /tmp/cg-fanout.XXXXXX)"
SERVER_PID=""

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary
"$PY" "$LIB" machine >"$TMP/machine.json"
"$PY" "$LIB" versions "$REPO" "$BIN" "$PY" >"$TMP/versions.json"
# One ECDSA P-256 server certificate for the TLS targets, signed by a CA of this run.
if [[ ",$TARGETS," == *-tls,* ]]; then make_pki "$TMP/pki"; fi
RABBIT_PID="$(pgrep -o -x beam.smp 2>/dev/null || true)"   # read-only: its CPU time

proc_json() {  # PID FILE
    if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then "$PY" "$LIB" proc "$1" >"$2"; else echo '{}' >"$2"; fi
}
# New lines of LOG since byte OFFSET that look like trouble, as a JSON list.
log_problems() {  # LOG OFFSET OUT
    { tail -c +"$(($2 + 1))" "$1" 2>/dev/null | grep -aiE 'error|warn|panic|traceback|exception|critical' || true; } \
        | "$PY" -c 'import json,sys; print(json.dumps([l.rstrip()[:400] for l in sys.stdin][:50]))' >"$3"
}

# ---------------------------------------------------------------- servers ---
WS_PORT=""; ADMIN_PORT=""; PUB_PORT=""; SERVER_LOG=""; BACKEND_PID=""; BACKEND_URL=""; PUSHPIN_SETTINGS=""

# start_channelgate TARGET: channelgate-memory | -amqp | -tls (memory broker, [tls] listener)
# | -deflate (memory broker, [[ws]] compression = "deflate"). Returns 1 (and logs why)
# when this binary does not know a key the target needs (the deflate keys are new).
start_channelgate() {
    local target="$1" kind=memory tls=0 deflate=0 conf="$TMP/$1.toml" listen
    case "$target" in
        channelgate-amqp) kind=amqp ;;
        channelgate-tls) tls=1 ;;
        channelgate-deflate) deflate=1 ;;
    esac
    WS_PORT="$("$PY" "$LIB" freeport)"; ADMIN_PORT="$("$PY" "$LIB" freeport)"
    SERVER_LOG="$TMP/$target.log"
    # With TLS, [server] still needs a plain listener (unused); the clients use [tls]'s.
    listen="127.0.0.1:$WS_PORT"; [ "$tls" = 1 ] && listen="127.0.0.1:$("$PY" "$LIB" freeport)"
    cat >"$conf" <<EOF
[server]
listen = ["$listen"]
threads = 2
grace_period = "2s"
upgrade_sock = "$TMP/upgrade-$target.sock"
pid_file = "$TMP/$target.pid"

[upstream]
# Nothing is proxied in this benchmark; the TCP health check of the admin listener
# keeps the pool (and /readyz) green.
servers = ["127.0.0.1:$ADMIN_PORT"]

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[log]
level = "warn"
access_log = false

[broker]
kind = "$kind"

[[ws]]
path = "/ws/{g}/"
groups = ["{g}"]
ping_interval = "0s"
send_queue = 1024
EOF
    if [ "$deflate" = 1 ]; then echo 'compression = "deflate"' >>"$conf"; fi
    if [ "$tls" = 1 ]; then
        cat >>"$conf" <<EOF

[tls]
listen = ["127.0.0.1:$WS_PORT"]
certificates = [{ cert = "$TMP/pki/cert.pem", key = "$TMP/pki/key.pem" }]
EOF
    fi
    if ! "$BIN" check --config "$conf" >"$TMP/check-$target.out" 2>&1; then
        cat "$TMP/check-$target.out" >&2
        if [ "$deflate" = 1 ] && grep -qi 'compression' "$TMP/check-$target.out"; then
            log "WARNING: this channelgate does not know [[ws]] compression yet; skipping $target"
            return 1
        fi
        die "channelgate check failed ($target)"
    fi
    "$BIN" run --config "$conf" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$ADMIN_PORT" 15 "$SERVER_PID" && wait_port "$WS_PORT" 15 "$SERVER_PID" \
        || { tail -n 20 "$SERVER_LOG" >&2; die "$target did not start"; }
    if [ "$kind" = amqp ]; then
        "$PY" "$LIB" wait-metric "http://127.0.0.1:$ADMIN_PORT" channelgate_broker_up 1 15 >/dev/null \
            || die "channelgate did not connect to RabbitMQ"
    fi
    log "$target pid $SERVER_PID ws :$WS_PORT admin :$ADMIN_PORT"
}

start_daphne() {
    WS_PORT="$("$PY" "$LIB" freeport)"; ADMIN_PORT=""
    SERVER_LOG="$TMP/daphne.log"
    # One daphne process, as the channelgate process is one; pings off as in channelgate's
    # route; -v 0: no access log, warnings and errors only.
    (cd "$TMP" && PYTHONPATH="$HERE/daphne_app" exec "$PY" -m daphne -b 127.0.0.1 -p "$WS_PORT" -v 0 \
        --ping-interval 86400 --ping-timeout 86400 benchapp.asgi:application) >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$WS_PORT" 30 "$SERVER_PID" || { tail -n 20 "$SERVER_LOG" >&2; die "daphne did not start"; }
    log "daphne pid $SERVER_PID ws :$WS_PORT"
}

# start_nchan TARGET N: nginx master + 2 workers (channelgate runs 2 threads); nchan-tls
# listens with ssl (the run's certificate), nchan-deflate stores a deflated copy of each
# message (nchan_deflate_message_for_websocket on, in the publisher location as nchan's
# docs say; compression level/window/memlevel at nchan's defaults 6/10/8).
start_nchan() {
    local target="$1" n="$2" ssl="" ssl_conf="" deflate_conf=""
    WS_PORT="$("$PY" "$LIB" freeport)"; ADMIN_PORT=""
    PUB_PORT="$("$PY" "$LIB" freeport)"
    SERVER_LOG="$TMP/$target-error.log"
    if [ "$target" = nchan-tls ]; then
        ssl=" ssl"; ssl_conf="ssl_certificate $TMP/pki/cert.pem; ssl_certificate_key $TMP/pki/key.pem;"
    fi
    if [ "$target" = nchan-deflate ]; then deflate_conf="nchan_deflate_message_for_websocket on;"; fi
    mkdir -p "$TMP/nginx-tmp"
    cat >"$TMP/$target.conf" <<EOF
load_module $NCHAN_MODULE;
worker_processes 2;
pid $TMP/nchan.pid;
error_log $SERVER_LOG warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $((n + 1024)); }
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
        location ~ "^/ws/([A-Za-z0-9._-]+)/\$" {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_websocket_ping_interval 0;
        }
    }
    server {
        listen 127.0.0.1:$PUB_PORT;
        location ~ "^/pub/([A-Za-z0-9._-]+)\$" {
            nchan_publisher http;
            nchan_channel_id \$1;
            $deflate_conf
        }
    }
}
EOF
    "$NGINX" -t -q -c "$TMP/$target.conf" -p "$TMP" -e "$SERVER_LOG" >"$TMP/$target-check.out" 2>&1 \
        || { cat "$TMP/$target-check.out" >&2; die "nginx -t failed for the $target config"; }
    "$NGINX" -c "$TMP/$target.conf" -p "$TMP" -e "$SERVER_LOG" -g 'daemon off;' >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$WS_PORT" 15 "$SERVER_PID" && wait_port "$PUB_PORT" 15 "$SERVER_PID" \
        || { tail -n 20 "$SERVER_LOG" >&2; die "$target did not start"; }
    log "$target (nginx + nchan) pid $SERVER_PID ws :$WS_PORT publish :$PUB_PORT"
}

start_pushpin() {  # N: pushpin's runner with condure (2 workers), zurl, pushpin-proxy, pushpin-handler
    WS_PORT="$("$PY" "$LIB" freeport)"; ADMIN_PORT=""
    PUB_PORT="$("$PY" "$LIB" freeport)"
    local backend_port dir="$TMP/pushpin"
    backend_port="$("$PY" "$LIB" freeport)"
    SERVER_LOG="$TMP/pushpin.log"
    # The GRIP backend: answers each WebSocket's OPEN (WebSocket-over-HTTP) with a
    # subscribe to the group in its path.
    "$PY" "$HERE/pushpin_backend.py" "$backend_port" >"$TMP/pushpin-backend.log" 2>&1 &
    BACKEND_PID=$!; PIDS+=("$BACKEND_PID")
    wait_port "$backend_port" 15 "$BACKEND_PID" || { tail -n 20 "$TMP/pushpin-backend.log" >&2; die "pushpin backend did not start"; }
    BACKEND_URL="http://127.0.0.1:$backend_port"
    # The Debian template with every port, socket, run and log dir of this run; see
    # pushpin_config in benchlib.py for what is changed and why.
    PUSHPIN_SETTINGS="$("$PY" "$LIB" pushpin-config "$PUSHPIN_TEMPLATE" "$dir" "$WS_PORT" "$PUB_PORT" "$backend_port" "$1")" \
        || die "could not write the pushpin config"
    # --merge-output: the services' logs go to the runner's stdout (one file to watch).
    "$PUSHPIN" --config "$dir/pushpin.conf" --merge-output >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$WS_PORT" 20 "$SERVER_PID" && wait_port "$PUB_PORT" 20 "$SERVER_PID" \
        || { tail -n 20 "$SERVER_LOG" >&2; die "pushpin did not start"; }
    local i
    for i in $(seq 100); do grep -q '\[handler\] started' "$SERVER_LOG" && break; sleep 0.1; done
    log "pushpin pid $SERVER_PID ($(tree_names "$SERVER_PID")) ws :$WS_PORT publish :$PUB_PORT backend :$backend_port, open files $(awk '/Max open files/ {print $4}' "/proc/$SERVER_PID/limits")"
}

stop_server() {
    [ -n "$SERVER_PID" ] && stop_tree "$SERVER_PID"
    SERVER_PID=""
    [ -n "$BACKEND_PID" ] && stop_pid "$BACKEND_PID"
    BACKEND_PID=""; BACKEND_URL=""
}

# --------------------------------------------------------------- scenario ---
# Publisher kind of a target (cg-load publish --target).
publisher_of() {
    case "$1" in
        channelgate-amqp|daphne) echo amqp ;;
        channelgate-*) echo http-admin ;;
        nchan*) echo http-post ;;
        pushpin) echo pushpin ;;
    esac
}

run_scenario() {  # TARGET SCENARIO N RATE M
    local target="$1" scenario="$2" n="$3" messages="$5"
    local tag="$target-$scenario-$n" group="bench-$RUN_ID-$scenario-$n"
    local rate=0; [ "$scenario" = rate ] && rate="$4"
    local ready="$TMP/$tag.ready" fan_out="$TMP/$tag.fanout.json" pub_out="$TMP/$tag.publish.json"
    local budget=$((60 + n / 50))
    # The clients wait at least as long as the rate scenario publishes, plus a minute.
    local duration="$DURATION"
    if [ "$rate" != 0 ]; then
        local needed
        needed="$("$PY" -c 'import math,sys; print(math.ceil(float(sys.argv[1]) / float(sys.argv[2])) + 60)' "$messages" "$rate")"
        [ "$needed" -gt "$duration" ] && duration="$needed"
    fi
    # Client: wss:// with the run's CA for -tls; the raw client with --client raw, and
    # offering permessage-deflate for -deflate targets.
    local scheme=ws client_args=()
    if [[ "$target" == *-tls ]]; then scheme=wss; client_args+=(--ca-file "$TMP/pki/ca.pem"); fi
    [ "$CLIENT" = raw ] && client_args+=(--raw)
    [[ "$target" == *-deflate ]] && client_args+=(--deflate --inflate-every "$INFLATE_EVERY")
    local admin_url="" binds_before=0 offset
    [ -n "$ADMIN_PORT" ] && admin_url="http://127.0.0.1:$ADMIN_PORT"
    offset="$(stat -c %s "$SERVER_LOG" 2>/dev/null || echo 0)"
    if [ "$target" = channelgate-amqp ]; then
        binds_before="$("$PY" -c 'import json,sys; m=json.load(sys.stdin); print(int(sum(v for k,v in m.get("channelgate_broker_bindings_total",{}).items() if "op=\"bind\"" in k and "outcome=\"ok\"" in k)))' \
            < <("$PY" "$LIB" metrics "$admin_url"))"
    fi

    if [ -n "$admin_url" ]; then
        # The previous scenario's clients must be gone (their memberships released).
        "$PY" "$LIB" wait-metric-max "$admin_url" channelgate_hub_memberships 0 30 >/dev/null \
            || log "WARNING: $tag: memberships of earlier clients still held after 30s"
    fi
    if [ "$target" = pushpin ]; then
        # The previous scenario's clients must be gone: Pushpin passes their closes on to
        # the backend (WebSocket-over-HTTP CLOSE), which takes it minutes for 10k; the
        # quiet wait below would give up first.
        "$PY" "$LIB" pushpin-wait-closed "$BACKEND_URL" 600 >"$TMP/$tag.closed-before.json" \
            || log "WARNING: $tag: earlier clients' closes still being passed on after 600s: $(cat "$TMP/$tag.closed-before.json")"
        log "$tag: earlier clients' closes passed on: $(cat "$TMP/$tag.closed-before.json")"
    fi
    "$PY" "$LIB" quiet "$QUIET_PCT" "$QUIET_WAIT" >"$TMP/$tag.quiet.json"
    grep -q '"quiet": true' "$TMP/$tag.quiet.json" || log "WARNING: $tag: machine still busy after ${QUIET_WAIT}s: $(cat "$TMP/$tag.quiet.json")"
    log "$tag: $n clients -> group $group"
    timeout $((duration + budget + 60)) "$LOAD" fanout --url "$scheme://127.0.0.1:$WS_PORT/ws/$group/" \
        -n "$n" -m "$messages" --duration "${duration}s" --idle-timeout "${IDLE}s" "${client_args[@]}" \
        --concurrency "$CONCURRENCY" --ready-file "$ready" --label "$target/$scenario" \
        >"$fan_out" 2>"$TMP/$tag.fanout.err" &
    local fan_pid=$!; PIDS+=("$fan_pid")
    local i
    for i in $(seq $((budget * 10))); do
        [ -s "$ready" ] && break
        kill -0 "$fan_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$ready" ] || { cat "$TMP/$tag.fanout.err" >&2; die "$tag: clients not ready after ${budget}s"; }
    local connected
    connected="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$ready")"
    log "$tag: $(cat "$ready" | tr -d '\n')"

    # Make sure every client is a member (channelgate joins right after the 101) and the
    # queue is bound (amqp) before publishing. daphne joins before it accepts.
    if [ -n "$admin_url" ]; then
        "$PY" "$LIB" wait-metric "$admin_url" channelgate_hub_memberships "$connected" 30 >/dev/null \
            || log "WARNING: $tag: not every client joined the group within 30s"
        if [ "$target" = channelgate-amqp ]; then
            "$PY" "$LIB" wait-metric "$admin_url" channelgate_broker_bindings_total $((binds_before + 1)) 30 'op="bind",outcome="ok"' >/dev/null \
                || log "WARNING: $tag: the queue was not bound to $group within 30s"
        fi
        "$PY" "$LIB" metrics "$admin_url" >"$TMP/$tag.metrics-before.json"
    else
        echo '{}' >"$TMP/$tag.metrics-before.json"
    fi
    if [ "$target" = pushpin ]; then
        # Pushpin answers the 101 before the handler has the subscription: wait for it.
        "$PY" "$LIB" pushpin-wait-subscribed "$SERVER_LOG" "$group" "$connected" 60 >/dev/null \
            || log "WARNING: $tag: not every client was subscribed to $group within 60s"
    fi
    sleep 1
    local pub_offset
    pub_offset="$(stat -c %s "$SERVER_LOG" 2>/dev/null || echo 0)"
    [ -n "$BACKEND_PID" ] && proc_json "$BACKEND_PID" "$TMP/$tag.backend-before.json"
    proc_json "$SERVER_PID" "$TMP/$tag.server-before.json"
    proc_json "$RABBIT_PID" "$TMP/$tag.rabbit-before.json"

    local pub_args=(--group "$group" -m "$messages" --rate "$rate" --size "$SIZE" --payload "$PAYLOAD"
                    --label "$target/$scenario")
    case "$(publisher_of "$target")" in
        http-admin) pub_args+=(--target http-admin --admin "$admin_url") ;;
        http-post) pub_args+=(--target http-post --post-url "http://127.0.0.1:$PUB_PORT/pub/{group}") ;;
        pushpin) pub_args+=(--target pushpin --pushpin-url "http://127.0.0.1:$PUB_PORT/publish/") ;;
        *) pub_args+=(--target amqp) ;;
    esac
    log "$tag: publishing $messages messages ($( [ "$rate" = 0 ] && echo 'as fast as possible' || echo "$rate/s" ))"
    timeout $((duration + 60)) "$LOAD" publish "${pub_args[@]}" >"$pub_out" 2>"$TMP/$tag.publish.err" \
        || log "WARNING: $tag: publisher exited with $? ($(tail -n 1 "$TMP/$tag.publish.err"))"
    if ! grep -q '"ok":[1-9]' "$pub_out" 2>/dev/null; then
        log "WARNING: $tag: nothing was published; stopping the clients"
        kill -TERM "$fan_pid" 2>/dev/null || true
    fi
    wait "$fan_pid" || log "WARNING: $tag: cg-load fanout exited with $?"

    proc_json "$SERVER_PID" "$TMP/$tag.server-after.json"
    proc_json "$RABBIT_PID" "$TMP/$tag.rabbit-after.json"
    local extra=()
    if [ -n "$BACKEND_PID" ]; then
        proc_json "$BACKEND_PID" "$TMP/$tag.backend-after.json"
        extra+=(backend_before="$TMP/$tag.backend-before.json" backend_after="$TMP/$tag.backend-after.json")
    fi
    if [ "$target" = pushpin ]; then
        "$PY" "$LIB" pushpin-publishes "$SERVER_LOG" "$pub_offset" "$group" >"$TMP/$tag.pushpin-publishes.json"
        extra+=(pushpin_publishes="$TMP/$tag.pushpin-publishes.json")
    fi
    if [ -n "$admin_url" ]; then
        sleep 0.5
        "$PY" "$LIB" metrics "$admin_url" >"$TMP/$tag.metrics-after.json" || echo '{}' >"$TMP/$tag.metrics-after.json"
    else
        echo '{}' >"$TMP/$tag.metrics-after.json"
    fi
    log_problems "$SERVER_LOG" "$offset" "$TMP/$tag.log-problems.json"
    "$PY" -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' \
        n="$n" messages="$messages" rate="$rate" size="$SIZE" payload="$PAYLOAD" duration_s="$duration" idle_timeout_s="$IDLE" \
        concurrency="$CONCURRENCY" group="$group" publisher="$(publisher_of "$target")" \
        client="$( [ "$CLIENT" = raw ] || [[ "$target" == *-deflate ]] && echo raw || echo tokio-tungstenite)" \
        client_offers_deflate="$( [[ "$target" == *-deflate ]] && echo "yes, every ${INFLATE_EVERY}th client inflates" || echo no)" \
        tls="$( [[ "$target" == *-tls ]] && echo 'yes (ECDSA P-256, TLS 1.3 by default)' || echo no)" \
        server_settings="$(case "$target" in
            channelgate-deflate) echo 'threads=2 ping_interval=0s send_queue=1024 access_log=false level=warn compression="deflate"' ;;
            channelgate-tls) echo 'threads=2 ping_interval=0s send_queue=1024 access_log=false level=warn; [tls] listen + certificates, other [tls] keys default' ;;
            channelgate-*) echo 'threads=2 ping_interval=0s send_queue=1024 access_log=false level=warn' ;;
            nchan) echo 'nginx worker_processes 2, nchan memory store, websocket subscriber, ping 0, access_log off' ;;
            nchan-tls) echo 'nginx worker_processes 2, nchan memory store, websocket subscriber, ping 0, access_log off; listen ssl, ssl_* defaults' ;;
            nchan-deflate) echo 'nginx worker_processes 2, nchan memory store, websocket subscriber, ping 0, access_log off; nchan_deflate_message_for_websocket on (publisher location), nchan_permessage_deflate_compression_* defaults (level 6, window 10, memlevel 8)' ;;
            pushpin) echo "$PUSHPIN_SETTINGS" ;;
            *) echo 'daphne 1 process -v 0 ping-interval 86400; channels_rabbitmq defaults' ;;
        esac)" \
        >"$TMP/$tag.params.json"
    "$PY" "$LIB" fanout-record results="$RESULTS" run_id="$RUN_ID" target="$target" scenario="$scenario" \
        n="$n" messages="$messages" rate="$rate" payload="$PAYLOAD" \
        fanout_out="$fan_out" publish_out="$pub_out" \
        server_before="$TMP/$tag.server-before.json" server_after="$TMP/$tag.server-after.json" \
        rabbit_before="$TMP/$tag.rabbit-before.json" rabbit_after="$TMP/$tag.rabbit-after.json" \
        metrics_before="$TMP/$tag.metrics-before.json" metrics_after="$TMP/$tag.metrics-after.json" \
        log_problems="$TMP/$tag.log-problems.json" quiet="$TMP/$tag.quiet.json" params="$TMP/$tag.params.json" \
        machine="$TMP/machine.json" versions="$TMP/versions.json" "${extra[@]}"
    "$PY" "$LIB" fanout-last "$RESULTS" "$tag" >&2
}

# -------------------------------------------------------------------- run ---
log "run $RUN_ID: cases (N:rate:M) ${CASES[*]} payload=$PAYLOAD client=$CLIENT targets=${TARGET_LIST[*]} scenarios=$SCENARIOS"
SKIPPED=()
for c in "${CASES[@]}"; do
    IFS=: read -r n rate messages <<<"$c"
    for target in "${TARGET_LIST[@]}"; do
        case "$target" in
            channelgate-*) start_channelgate "$target" || { SKIPPED+=("$target (N=$n): this channelgate does not know [[ws]] compression"); continue; } ;;
            daphne) start_daphne ;;
            nchan*) start_nchan "$target" "$n" ;;
            pushpin) start_pushpin "$n" ;;
            *) continue ;;
        esac
        for scenario in "${SCENARIO_LIST[@]}"; do
            run_scenario "$target" "$scenario" "$n" "$rate" "$messages"
        done
        stop_server
        if [ "$(grep -caiE 'panic|thread .* panicked' "$SERVER_LOG" || true)" != 0 ]; then
            log "WARNING: $target logged a panic: see $SERVER_LOG"
            KEEP=1
        fi
        cp "$SERVER_LOG" "$TMP/last-$target-$n.log" 2>/dev/null || true
    done
done

echo
echo "fan-out benchmark $RUN_ID: cases N:rate:M = ${CASES[*]}; payload $PAYLOAD$( [ "$PAYLOAD" = text ] && echo " of $SIZE bytes"); rate = that many msg/s, burst = as fast as possible"
echo "machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
"$PY" "$LIB" fanout-table "$RESULTS" "$RUN_ID"
for s in "${SKIPPED[@]}"; do echo "SKIPPED $s"; done
echo
echo "results appended to ${RESULTS#"$REPO"/} (run_id $RUN_ID)"
