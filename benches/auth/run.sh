#!/usr/bin/env bash
# WebSocket connection rate with authentication by the app: N clients with a Django
# session cookie connect (at most C attempts in flight), for
#   channelgate-auth     channelgate [[ws]] path = "/channels/updates/", groups = ["updates-{user}"],
#                        auth = { path = "/ws-auth/" } -> every connect is a GET /ws-auth/ to gunicorn
#   daphne-auth          daphne 4 + Channels AuthMiddlewareStack (session from the same SQLite DB),
#                        consumer joins updates-<id> through channels_rabbitmq (daphne_app/)
#   channelgate-noauth   channelgate, the same route without auth (baseline)
#   daphne-noauth        daphne, the same consumer without AuthMiddlewareStack (baseline)
#   app-ws-auth          wrk on gunicorn's GET /ws-auth/ alone: the app's ceiling for auth answers
# with the same client tool (cg-load connect) and the same cookie.
#
#   benches/auth/run.sh [--n 2000] [--concurrency 50] [--rounds 3] [--targets LIST]
#                       [--warmup 100] [--connect-timeout 10s] [--wrk-duration 5s]
#                       [--gunicorn-workers 2] [--gunicorn-threads 8]
#                       [--results FILE] [--quiet-wait 120] [--no-build] [--keep]
#
# Appends one JSON line per target to benches/results/auth.jsonl and prints a table with
# the ratios channelgate/daphne. Loopback only; every wait is bounded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RESULTS="$REPO/benches/results/auth.jsonl"
BIN="$REPO/target/release/channelgate"
LOAD="$REPO/benches/load/target/release/cg-load"
PY="$REPO/.venv/bin/python"
LIB="$REPO/benches/fanout/benchlib.py"
ALIB="$HERE/authlib.py"
DJANGO_APP="$REPO/tests/django_app"

N=2000
CONCURRENCY=50
ROUNDS=3
WARMUP=100
CONNECT_TIMEOUT=10s
WRK_DURATION=5s
TARGETS="channelgate-auth,daphne-auth,channelgate-noauth,daphne-noauth,app-ws-auth"
GUNICORN_WORKERS=2
GUNICORN_THREADS=8
BUILD=1
KEEP=0
QUIET_PCT=25       # before each measurement, wait until the machine is at most this busy (CPU %) ...
QUIET_WAIT=120     # ... for at most this many seconds, then measure anyway and say so
SETTLE_WAIT=30     # after each measurement, wait (at most) until the servers are idle again

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
BENCH=auth
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --n) N="${2:?}"; shift 2 ;;
        --concurrency) CONCURRENCY="${2:?}"; shift 2 ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --targets) TARGETS="${2:?}"; shift 2 ;;
        --warmup) WARMUP="${2:?}"; shift 2 ;;
        --connect-timeout) CONNECT_TIMEOUT="${2:?}"; shift 2 ;;
        --wrk-duration) WRK_DURATION="${2:?}"; shift 2 ;;
        --gunicorn-workers) GUNICORN_WORKERS="${2:?}"; shift 2 ;;
        --gunicorn-threads) GUNICORN_THREADS="${2:?}"; shift 2 ;;
        --results) RESULTS="${2:?}"; shift 2 ;;
        --quiet-wait) QUIET_WAIT="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
num --n "$N"; [ "$N" -ge 1 ] && [ "$N" -le 100000 ] || die "--n must be 1..100000"
num --concurrency "$CONCURRENCY"; [ "$CONCURRENCY" -ge 1 ] && [ "$CONCURRENCY" -le 10000 ] || die "--concurrency must be 1..10000"
num --rounds "$ROUNDS"; [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "--rounds must be 1..20"
num --warmup "$WARMUP"; [ "$WARMUP" -le 10000 ] || die "--warmup must be at most 10000"
num --gunicorn-workers "$GUNICORN_WORKERS"; num --gunicorn-threads "$GUNICORN_THREADS"
num --quiet-wait "$QUIET_WAIT"
[[ "$CONNECT_TIMEOUT" =~ ^[0-9]+s$ ]] || die "--connect-timeout must be whole seconds, like 10s"
[[ "$WRK_DURATION" =~ ^[0-9]+s$ ]] || die "--wrk-duration must be whole seconds, like 5s"
CT_S="${CONNECT_TIMEOUT%s}"; [ "$CT_S" -ge 1 ] && [ "$CT_S" -le 120 ] || die "--connect-timeout must be 1s..120s"
WRK_S="${WRK_DURATION%s}"; [ "$WRK_S" -ge 1 ] && [ "$WRK_S" -le 300 ] || die "--wrk-duration must be 1s..300s"
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    case "$t" in channelgate-auth|daphne-auth|channelgate-noauth|daphne-noauth|app-ws-auth) ;;
        *) die "unknown target '$t' (channelgate-auth, daphne-auth, channelgate-noauth, daphne-noauth, app-ws-auth)" ;; esac
done
has_target() { [[ ",$TARGETS," == *",$1,"* ]]; }
has_prefix() { [[ ",$TARGETS" == *",$1"* ]]; }

# ------------------------------------------------------------------ setup ---
[ -x "$PY" ] || "$REPO/scripts/setup"
"$PY" -c 'import daphne, channels, channels_rabbitmq, gunicorn' 2>/dev/null || "$REPO/scripts/setup"
if [ "$BUILD" = 1 ] || [ ! -x "$BIN" ]; then
    log "cargo build --release (channelgate)"
    (cd "$REPO" && timeout 1800 cargo build --release --bin channelgate) >&2 || die "channelgate build failed"
fi
if [ "$BUILD" = 1 ] || [ ! -x "$LOAD" ]; then
    log "cargo build --release (benches/load: cg-load)"
    (cd "$REPO/benches/load" && timeout 1800 cargo build --release) >&2 || die "cg-load build failed"
fi
if has_prefix daphne && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    die "daphne's channel layer needs RabbitMQ on 127.0.0.1:5672 (service rabbitmq-server start)"
fi
if has_target app-ws-auth && ! command -v wrk >/dev/null 2>&1; then
    log "WARNING: wrk is not installed (apt-get install wrk); skipping the app-ws-auth target"
    TARGET_LIST=("${TARGET_LIST[@]/app-ws-auth}")
fi
TARGETS="$(IFS=,; echo "${TARGET_LIST[*]}" | sed 's/,,*/,/g; s/^,//; s/,$//')"
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"

# File descriptors: cg-load keeps every connection open until all attempts are done.
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt $((N + 1024)) ]; then
    ulimit -Hn $((N + 4096)) 2>/dev/null || die "N=$N needs $((N + 1024)) open files per process; the hard limit is $hard"
fi
ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
TMP="$(mktemp -d /tmp/cg-auth.XXXXXX)"

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary
"$PY" "$LIB" machine >"$TMP/machine.json"
"$PY" "$ALIB" versions "$REPO" "$BIN" "$PY" >"$TMP/versions.json"
RABBIT_PID="$(pgrep -o -x beam.smp 2>/dev/null || true)"   # read-only: its CPU time
echo '{}' >"$TMP/checks.json"
: >"$TMP/rounds.jsonl"

proc_json() {  # PID FILE
    if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then "$PY" "$LIB" proc "$1" >"$2"; else echo '{}' >"$2"; fi
}

# ---------------------------------------------------------------- servers ---
# The Django test app under gunicorn: the login, /ws-auth/ for channelgate, and the
# database daphne reads the same sessions from.
export TESTAPP_DB="$TMP/testapp.sqlite3"
"$PY" "$DJANGO_APP/manage.py" prepare >"$TMP/prepare.log" 2>&1 || { cat "$TMP/prepare.log" >&2; die "manage.py prepare failed"; }
G_PORT="$("$PY" "$LIB" freeport)"
"$REPO/.venv/bin/gunicorn" --chdir "$DJANGO_APP" testapp.wsgi:application --bind "127.0.0.1:$G_PORT" \
    --worker-class gthread --threads "$GUNICORN_THREADS" --workers "$GUNICORN_WORKERS" --no-control-socket \
    >"$TMP/gunicorn.log" 2>&1 &
G_PID=$!; PIDS+=("$G_PID")
wait_port "$G_PORT" 30 "$G_PID" || { tail -n 20 "$TMP/gunicorn.log" >&2; die "gunicorn did not start"; }
log "gunicorn pid $G_PID :$G_PORT ($GUNICORN_WORKERS workers x $GUNICORN_THREADS threads, gthread)"

COOKIE="$("$PY" "$ALIB" login "http://127.0.0.1:$G_PORT" alice alice-pw)" || die "login as alice failed"
WHO="$("$PY" "$ALIB" check-auth "http://127.0.0.1:$G_PORT/ws-auth/" "$COOKIE")" || die "GET /ws-auth/ with the session cookie did not answer 200"
log "logged in as alice; /ws-auth/ says $WHO"
USER_ID="$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["user"])' "$WHO")"

declare -A WS_PORT ADMIN_PORT SERVER_PID SERVER_LOG
start_channelgate() {  # auth|noauth
    local kind="$1" t="channelgate-$1" conf="$TMP/channelgate-$1.toml"
    WS_PORT[$t]="$("$PY" "$LIB" freeport)"; ADMIN_PORT[$t]="$("$PY" "$LIB" freeport)"
    SERVER_LOG[$t]="$TMP/channelgate-$kind.log"
    {
        cat <<EOF
[server]
listen = ["127.0.0.1:${WS_PORT[$t]}"]
threads = 2
grace_period = "2s"
upgrade_sock = "$TMP/upgrade-$kind.sock"
pid_file = "$TMP/channelgate-$kind.pid"

[upstream]
servers = ["127.0.0.1:$G_PORT"]    # gunicorn: the auth subrequests go here

[admin]
listen = "127.0.0.1:${ADMIN_PORT[$t]}"

[log]
level = "warn"
access_log = false

EOF
        if [ "$kind" = auth ]; then
            cat <<'EOF'
[[ws]]
path = "/channels/updates/"
groups = ["updates-{user}"]
auth = { path = "/ws-auth/" }
EOF
        else
            cat <<'EOF'
[[ws]]
path = "/channels/noauth/"
groups = ["updates-noauth"]
EOF
        fi
    } >"$conf"
    "$BIN" check --config "$conf" >"$TMP/check-$kind.out" 2>&1 || { cat "$TMP/check-$kind.out" >&2; die "channelgate check failed"; }
    "$BIN" run --config "$conf" >"${SERVER_LOG[$t]}" 2>&1 &
    SERVER_PID[$t]=$!; PIDS+=("$!")
    wait_port "${ADMIN_PORT[$t]}" 15 "${SERVER_PID[$t]}" && wait_port "${WS_PORT[$t]}" 15 "${SERVER_PID[$t]}" \
        || { tail -n 20 "${SERVER_LOG[$t]}" >&2; die "channelgate ($kind) did not start"; }
    log "$t pid ${SERVER_PID[$t]} ws :${WS_PORT[$t]} admin :${ADMIN_PORT[$t]}"
}

start_daphne() {  # one process serves both daphne targets (two routes)
    local port; port="$("$PY" "$LIB" freeport)"
    (cd "$TMP" && PYTHONPATH="$HERE/daphne_app:$DJANGO_APP" exec "$PY" -m daphne -b 127.0.0.1 -p "$port" -v 0 \
        authbench.asgi:application) >"$TMP/daphne.log" 2>&1 &
    local pid=$!; PIDS+=("$pid")
    wait_port "$port" 30 "$pid" || { tail -n 20 "$TMP/daphne.log" >&2; die "daphne did not start"; }
    for t in daphne-auth daphne-noauth; do
        WS_PORT[$t]="$port"; ADMIN_PORT[$t]=""; SERVER_PID[$t]="$pid"; SERVER_LOG[$t]="$TMP/daphne.log"
    done
    log "daphne pid $pid ws :$port"
}

has_target channelgate-auth && start_channelgate auth
has_target channelgate-noauth && start_channelgate noauth
has_prefix daphne && start_daphne
SERVER_PID[app-ws-auth]="$G_PID"; SERVER_LOG[app-ws-auth]="$TMP/gunicorn.log"; ADMIN_PORT[app-ws-auth]=""

url_of() {  # TARGET
    case "$1" in
        *-auth) echo "ws://127.0.0.1:${WS_PORT[$1]}/channels/updates/" ;;
        *-noauth) echo "ws://127.0.0.1:${WS_PORT[$1]}/channels/noauth/" ;;
    esac
}
group_of() { case "$1" in *-noauth) echo updates-noauth ;; *) echo "updates-$USER_ID" ;; esac; }
connect_budget() { echo $((CT_S * (($1 + CONCURRENCY - 1) / CONCURRENCY + 1) + 60)); }

# ----------------------------------------------------------------- checks ---
# Per WebSocket target, before measuring: a warm-up with the cookie (every connect must
# succeed), the same without a cookie (auth targets must refuse every one with 403), and
# one held client that must receive a message published to updates-<user id>.
CHECK_FAILED=0
checks() {  # TARGET
    local t="$1" url; url="$(url_of "$1")"
    local expect_nocookie=ok; [[ "$t" == *-auth ]] && expect_nocookie=refused
    timeout "$(connect_budget "$WARMUP")" "$LOAD" connect --url "$url" -n "$WARMUP" --concurrency "$CONCURRENCY" \
        --connect-timeout "$CONNECT_TIMEOUT" --header "Cookie: $COOKIE" --label "$t/warmup" \
        >"$TMP/$t.warmup.json" 2>"$TMP/$t.warmup.err" || true
    "$PY" "$ALIB" check checks="$TMP/checks.json" target="$t" name=warmup out="$TMP/$t.warmup.json" expect=ok || CHECK_FAILED=1
    timeout "$(connect_budget 20)" "$LOAD" connect --url "$url" -n 20 --concurrency 10 \
        --connect-timeout "$CONNECT_TIMEOUT" --label "$t/no-cookie" \
        >"$TMP/$t.nocookie.json" 2>"$TMP/$t.nocookie.err" || true
    "$PY" "$ALIB" check checks="$TMP/checks.json" target="$t" name=no_cookie out="$TMP/$t.nocookie.json" \
        expect="$expect_nocookie" || CHECK_FAILED=1
    local ready="$TMP/$t.hold.ready" group; group="$(group_of "$t")"
    timeout 60 "$LOAD" hold --url "$url" -n 1 --seconds 30s --header "Cookie: $COOKIE" --ready-file "$ready" \
        --label "$t/group" >"$TMP/$t.hold.json" 2>"$TMP/$t.hold.err" &
    local hp=$!; PIDS+=("$hp")
    local i
    for i in $(seq 100); do [ -s "$ready" ] && break; kill -0 "$hp" 2>/dev/null || break; sleep 0.1; done
    sleep 0.5   # channelgate joins right after the 101; daphne before it
    if [[ "$t" == channelgate-* ]]; then
        timeout 30 "$LOAD" publish --target http-admin --admin "http://127.0.0.1:${ADMIN_PORT[$t]}" --group "$group" -m 1 \
            >"$TMP/$t.publish.json" 2>"$TMP/$t.publish.err" || true
    else
        timeout 30 "$LOAD" publish --target amqp --group "$group" -m 1 >"$TMP/$t.publish.json" 2>"$TMP/$t.publish.err" || true
    fi
    sleep 1
    kill -TERM "$hp" 2>/dev/null || true
    wait "$hp" 2>/dev/null || true
    "$PY" "$ALIB" check checks="$TMP/checks.json" target="$t" name=group out="$TMP/$t.hold.json" expect=frames \
        note="published 1 message to $group" || CHECK_FAILED=1
}
for t in "${TARGET_LIST[@]}"; do
    [ "$t" = app-ws-auth ] && continue
    checks "$t"
done
# wrk's warm-up: one second of /ws-auth/.
if has_target app-ws-auth; then
    timeout 30 wrk -t2 -c"$CONCURRENCY" -d1s -H "Cookie: $COOKIE" "http://127.0.0.1:$G_PORT/ws-auth/" >"$TMP/app.warmup.txt" 2>&1 || true
fi
[ "$CHECK_FAILED" = 0 ] || log "WARNING: a functional check failed (see the WARNING lines under the table)"
# Log lines from here on are the rounds' (the checks' 403s are expected).
log_offset() { [ -n "$1" ] && stat -c %s "$1" 2>/dev/null || echo 0; }
declare -A LOG_OFFSET
for f in "$TMP/gunicorn.log" "$TMP/daphne.log" "$TMP/channelgate-auth.log" "$TMP/channelgate-noauth.log"; do
    LOG_OFFSET[$f]="$(log_offset "$f")"
done

# ------------------------------------------------------------------ rounds ---
# TCP connections to or from gunicorn's port in a state: whether the auth subrequests
# reuse keep-alive connections (few TIME-WAIT) or open one per connect (thousands).
tcp_count() { ss -Htan state "$1" "( sport = :$G_PORT or dport = :$G_PORT )" 2>/dev/null | wc -l; }
measure() {  # TARGET ROUND
    local t="$1" r="$2" tag="$1-r$2" admin=""
    [ -n "${ADMIN_PORT[$t]:-}" ] && admin="http://127.0.0.1:${ADMIN_PORT[$t]}"
    if [ -n "$admin" ]; then
        "$PY" "$LIB" wait-metric-max "$admin" channelgate_ws_connections 0 30 >/dev/null \
            || log "WARNING: $tag: connections of the last round still open after 30s"
    fi
    "$PY" "$LIB" quiet "$QUIET_PCT" "$QUIET_WAIT" >"$TMP/$tag.quiet.json"
    grep -q '"quiet": true' "$TMP/$tag.quiet.json" || log "WARNING: $tag: machine still busy after ${QUIET_WAIT}s: $(cat "$TMP/$tag.quiet.json")"
    if [ -n "$admin" ]; then "$PY" "$ALIB" metrics "$admin" >"$TMP/$tag.metrics-before.json"; else echo '{}' >"$TMP/$tag.metrics-before.json"; fi
    proc_json "${SERVER_PID[$t]}" "$TMP/$tag.server-before.json"
    proc_json "$G_PID" "$TMP/$tag.app-before.json"
    proc_json "$RABBIT_PID" "$TMP/$tag.rabbit-before.json"
    local tw_before; tw_before="$(tcp_count time-wait)"
    local started; started="$(date -u +%H:%M:%S)"
    local kind=connect
    if [ "$t" = app-ws-auth ]; then
        kind=wrk
        log "$tag: wrk -t2 -c$CONCURRENCY -d$WRK_DURATION GET /ws-auth/ with the cookie"
        timeout $((WRK_S + 30)) wrk -t2 -c"$CONCURRENCY" -d"$WRK_DURATION" --timeout 5s --latency \
            -H "Cookie: $COOKIE" "http://127.0.0.1:$G_PORT/ws-auth/" >"$TMP/$tag.out" 2>&1 \
            || log "WARNING: $tag: wrk exited with $?"
    else
        log "$tag: $N connects, $CONCURRENCY in flight"
        timeout "$(connect_budget "$N")" "$LOAD" connect --url "$(url_of "$t")" -n "$N" --concurrency "$CONCURRENCY" \
            --connect-timeout "$CONNECT_TIMEOUT" --header "Cookie: $COOKIE" --label "$t" \
            >"$TMP/$tag.out" 2>"$TMP/$tag.err" || log "WARNING: $tag: cg-load connect exited with $?"
    fi
    # Count the whole life of a connection (closing, leaving the group) in the server's
    # CPU: wait until the server (and the app, RabbitMQ) are idle again.
    local settled settle_pids=("${SERVER_PID[$t]}" "$G_PID")
    [[ "$t" == daphne-* ]] && [ -n "$RABBIT_PID" ] && settle_pids+=("$RABBIT_PID")
    settled="$("$PY" "$ALIB" settle "$SETTLE_WAIT" "${settle_pids[@]}")"
    proc_json "${SERVER_PID[$t]}" "$TMP/$tag.server-after.json"
    proc_json "$G_PID" "$TMP/$tag.app-after.json"
    proc_json "$RABBIT_PID" "$TMP/$tag.rabbit-after.json"
    if [ -n "$admin" ]; then "$PY" "$ALIB" metrics "$admin" >"$TMP/$tag.metrics-after.json"; else echo '{}' >"$TMP/$tag.metrics-after.json"; fi
    local tw_after est_after; tw_after="$(tcp_count time-wait)"; est_after="$(tcp_count established)"
    # The app's CPU belongs to a target only when that target uses the app.
    if [ "$t" != channelgate-auth ] && [ "$t" != app-ws-auth ]; then
        echo '{}' >"$TMP/$tag.app-before.json"; echo '{}' >"$TMP/$tag.app-after.json"
    fi
    if [[ "$t" != daphne-* ]]; then
        echo '{}' >"$TMP/$tag.rabbit-before.json"; echo '{}' >"$TMP/$tag.rabbit-after.json"
    fi
    [ "$t" = app-ws-auth ] && { echo '{}' >"$TMP/$tag.server-before.json"; echo '{}' >"$TMP/$tag.server-after.json"; }
    "$PY" "$ALIB" round rounds="$TMP/rounds.jsonl" target="$t" round="$r" kind="$kind" started="$started" \
        out="$TMP/$tag.out" quiet="$TMP/$tag.quiet.json" settled_s="$settled" \
        server_before="$TMP/$tag.server-before.json" server_after="$TMP/$tag.server-after.json" \
        app_before="$TMP/$tag.app-before.json" app_after="$TMP/$tag.app-after.json" \
        rabbit_before="$TMP/$tag.rabbit-before.json" rabbit_after="$TMP/$tag.rabbit-after.json" \
        metrics_before="$TMP/$tag.metrics-before.json" metrics_after="$TMP/$tag.metrics-after.json" \
        app_tcp_time_wait_before="$tw_before" app_tcp_time_wait_after="$tw_after" app_tcp_established_after="$est_after"
}

log "run $RUN_ID: N=$N concurrency=$CONCURRENCY rounds=$ROUNDS targets=$TARGETS"
nt=${#TARGET_LIST[@]}
for r in $(seq 1 "$ROUNDS"); do
    # Rotate the order every round so drift and noise spread over the targets.
    for k in $(seq 0 $((nt - 1))); do
        measure "${TARGET_LIST[$(((k + r - 1) % nt))]}" "$r"
    done
done

# Server log lines that look like trouble, per target (gunicorn's go with the targets that use it).
"$PY" - "$TMP/log-problems.json" "$TARGETS" \
    "channelgate-auth=$TMP/channelgate-auth.log@${LOG_OFFSET[$TMP/channelgate-auth.log]}" \
    "channelgate-noauth=$TMP/channelgate-noauth.log@${LOG_OFFSET[$TMP/channelgate-noauth.log]}" \
    "daphne-auth=$TMP/daphne.log@${LOG_OFFSET[$TMP/daphne.log]}" "daphne-noauth=$TMP/daphne.log@${LOG_OFFSET[$TMP/daphne.log]}" \
    "gunicorn=$TMP/gunicorn.log@${LOG_OFFSET[$TMP/gunicorn.log]}" <<'EOF'
import json, re, sys
out_path, targets = sys.argv[1], sys.argv[2].split(",")
logs = dict(a.split("=", 1) for a in sys.argv[3:])
bad = re.compile(r"error|warn|panic|traceback|exception|critical|timeout", re.I)
def problems(spec):
    path, _, offset = spec.rpartition("@")
    try:
        with open(path, "rb") as f:
            f.seek(int(offset or 0))
            text = f.read().decode(errors="replace")
    except (OSError, ValueError):
        return []
    return [l.rstrip()[:400] for l in text.splitlines() if bad.search(l)][:50]
g = ["gunicorn: " + l for l in problems(logs.get("gunicorn", ""))]
res = {}
for t in targets:
    p = problems(logs[t]) if logs.get(t) else []
    if t in ("channelgate-auth", "app-ws-auth"):
        p += g
    res[t] = p
json.dump(res, open(out_path, "w"))
EOF

"$PY" -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' \
    n="$N" concurrency="$CONCURRENCY" rounds="$ROUNDS" warmup_connections="$WARMUP" connect_timeout="$CONNECT_TIMEOUT" \
    wrk_duration="$WRK_DURATION" targets="$TARGETS" \
    client="cg-load connect (connections stay open until every attempt has finished, then all close), one Cookie header" \
    channelgate="threads=2, access_log=false, level=warn, [[ws]] /channels/updates/ groups=[updates-{user}] auth={path=/ws-auth/} (default timeout 2s); noauth: /channels/noauth/ groups=[updates-noauth]; memory broker; upstream = gunicorn, default pool" \
    daphne="daphne 1 process -v 0, AuthMiddlewareStack (db sessions, test app settings, same SQLite), channels_rabbitmq defaults, group_add before accept" \
    gunicorn="testapp.wsgi, gthread, workers=$GUNICORN_WORKERS threads=$GUNICORN_THREADS, SQLite sessions" \
    cpu_accounting="CPU (user+sys) per successful connect (per request for app-ws-auth), from the connects' start until the processes are idle again: channelgate-auth = channelgate + gunicorn; daphne-* = daphne + RabbitMQ; channelgate-noauth = channelgate; app-ws-auth = gunicorn. The client's CPU is not counted." \
    >"$TMP/params.json"
"$PY" "$ALIB" record results="$RESULTS" run_id="$RUN_ID" targets="$TARGETS" rounds="$TMP/rounds.jsonl" \
    checks="$TMP/checks.json" params="$TMP/params.json" machine="$TMP/machine.json" versions="$TMP/versions.json" \
    log_problems="$TMP/log-problems.json"

echo
echo "auth benchmark $RUN_ID: N=$N WebSocket connects with a Django session cookie, $CONCURRENCY in flight, median of $ROUNDS rounds"
echo "machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
"$PY" "$ALIB" table "$RESULTS" "$RUN_ID"
echo
echo "results appended to ${RESULTS#"$REPO"/} (run_id $RUN_ID)"
