#!/usr/bin/env bash
# HTTP proxy benchmark: wrk against (a) a fixed-response nginx upstream directly,
# (b) nginx proxy_pass (upstream keepalive) in front of it, (c) channelgate in front of it
# (buffering on, the default) and (d) channelgate with request and response buffering off;
# then nginx and both channelgates again for a 1 MiB response (the "-1m" rows).
# The targets run in rotation for R rounds; the median of the rounds is reported.
# The slow-clients scenario (gunicorn sync workers behind nginx vs channelgate) is
# benches/http/slow.sh.
#
#   benches/http/run.sh [--duration 10s] [--connections 64] [--rounds 3]
#                       [--threads 2] [--warmup 2s] [--quiet-wait 120] [--no-build] [--keep]
#
# Appends one JSON line per target to benches/results/http.jsonl and prints a table.
# Everything listens on, and all traffic goes to, 127.0.0.1 only. See README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RESULTS="$REPO/benches/results/http.jsonl"
BIN="$REPO/target/release/channelgate"

DURATION=10s
CONNECTIONS=64
ROUNDS=3
THREADS=2       # wrk threads
WARMUP=2s       # before every measured run
BUILD=1
KEEP=0
QUIET_PCT=15    # other load above this (CPU %) before a run: wait for it to pass ...
QUIET_WAIT=120  # ... for at most this many seconds, then measure anyway and say so

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
BENCH=http
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2:?}"; shift 2 ;;
        --duration=*) DURATION="${1#*=}"; shift ;;
        --connections) CONNECTIONS="${2:?}"; shift 2 ;;
        --connections=*) CONNECTIONS="${1#*=}"; shift ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --rounds=*) ROUNDS="${1#*=}"; shift ;;
        --threads) THREADS="${2:?}"; shift 2 ;;
        --threads=*) THREADS="${1#*=}"; shift ;;
        --warmup) WARMUP="${2:?}"; shift 2 ;;
        --warmup=*) WARMUP="${1#*=}"; shift ;;
        --quiet-wait) QUIET_WAIT="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# "10s", "1m", "30" (seconds) -> seconds. Bounded so a typo cannot run for hours.
to_seconds() {
    local v="$1" n unit
    [[ "$v" =~ ^([0-9]+)([sm]?)$ ]] || die "bad duration '$v' (use e.g. 10s, 1m)"
    n="${BASH_REMATCH[1]}"; unit="${BASH_REMATCH[2]}"
    [ "$unit" = m ] && n=$((n * 60))
    echo "$n"
}
DUR_S="$(to_seconds "$DURATION")"
WARM_S="$(to_seconds "$WARMUP")"
[[ "$CONNECTIONS" =~ ^[0-9]+$ ]] || die "bad --connections '$CONNECTIONS'"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] || die "bad --rounds '$ROUNDS'"
[[ "$THREADS" =~ ^[0-9]+$ ]] || die "bad --threads '$THREADS'"
[ "$DUR_S" -ge 1 ] && [ "$DUR_S" -le 600 ] || die "--duration must be 1s..10m"
[ "$WARM_S" -le 60 ] || die "--warmup must be at most 60s"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] && [ "$QUIET_WAIT" -le 600 ] || die "--quiet-wait must be 0..600 (seconds)"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "--rounds must be 1..20"
[ "$THREADS" -ge 1 ] && [ "$THREADS" -le 64 ] || die "--threads must be 1..64"
[ "$CONNECTIONS" -ge "$THREADS" ] && [ "$CONNECTIONS" -le 10000 ] \
    || die "--connections must be >= --threads and <= 10000"

# ------------------------------------------------------------------ tools ---
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "$BUILD" = 1 ] || [ ! -x "$BIN" ]; then
    # What building Pingora needs (same list as scripts/setup).
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    { command -v gcc && command -v g++ && command -v make; } >/dev/null 2>&1 || missing+=(build-essential)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v perl >/dev/null 2>&1 || missing+=(perl)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]})"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# ------------------------------------------------------------------ build ---
if [ "$BUILD" = 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs)"
    log "cargo build --release (a no-op when up to date)"
    (cd "$REPO" && timeout 3600 cargo build --release --locked --bin channelgate) \
        || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN missing (run without --no-build)"

# ---------------------------------------------------------------- cleanup ---
TMP="$(mktemp -d "${TMPDIR:-/tmp}/channelgate-bench.XXXXXX")"
T="$TMP"
chmod 755 "$T"   # nginx workers run as nobody when started by root
declare -A NAME_OF=()   # pid -> what it is, for messages
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ ports ---
# Free loopback ports from the kernel (bound at once so they differ, then released).
read -r P_UP P_NGX P_CG P_ADMIN P_CGU P_ADMINU < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*(s.getsockname()[1] for s in socks))
for s in socks: s.close()
EOF
)
[ -n "${P_ADMINU:-}" ] || die "could not get free ports"

# The upstream's answer: exactly 100 bytes (checked below).
BODY='channelgate bench: a fixed 100-byte response body, the same bytes for every request to the upstream'
BODY_BYTES=$(( ${#BODY} + 1 ))   # + the "\n" nginx appends from the escape in the config

# ---------------------------------------------------------------- configs ---

mkdir -p "$T/upstream/tmp" "$T/proxy/tmp" "$T/channelgate" "$T/channelgate-unbuffered"
head -c $((1 << 20)) /dev/urandom >"$T/upstream/1m.bin"

cat >"$T/upstream/nginx.conf" <<EOF
# Fixed-response upstream: one worker, no logging.
worker_processes 1;
pid $T/upstream/nginx.pid;
error_log $T/upstream/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
$(nginx_common "$T/upstream")
    # Neither proxy should pay for reconnects the upstream forces (default: 1000 requests).
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$P_UP;
        default_type text/plain;
        location / { return 200 "$BODY\n"; }
        # 1 MiB from a file (page cache): the large-response rows.
        location = /1m { alias $T/upstream/1m.bin; default_type application/octet-stream; }
    }
}
EOF

nginx_proxy_conf "$T/proxy" "$P_UP" "        listen 127.0.0.1:$P_NGX;"

# cg_conf DIR PORT ADMIN_PORT BUFFERING: channelgate in front of the same upstream,
# 2 threads, no access log, warn level; BUFFERING true (the default) or false.
cg_conf() {
    cat <<EOF
[server]
listen = ["127.0.0.1:$2"]
threads = 2
grace_period = "2s"
upgrade_sock = "$1/upgrade.sock"
pid_file = "$1/channelgate.pid"
keepalive_requests = 10000000
temp_dir = "$1"

[upstream]
servers = ["127.0.0.1:$P_UP"]
connect_timeout = "2s"
read_timeout = "60s"
write_timeout = "60s"
keepalive = 128
keepalive_timeout = "1s"
retries = 1
health_check = { kind = "tcp", interval = "5s", timeout = "2s", rise = 1, fall = 1 }
request_buffering = $4
response_buffering = $4

[admin]
listen = "127.0.0.1:$3"
enabled = true

[log]
level = "warn"
access_log = false
format = "text"
EOF
}
CG_CONF="$T/channelgate/channelgate.toml"
CGU_CONF="$T/channelgate-unbuffered/channelgate.toml"
cg_conf "$T/channelgate" "$P_CG" "$P_ADMIN" true >"$CG_CONF"
cg_conf "$T/channelgate-unbuffered" "$P_CGU" "$P_ADMINU" false >"$CGU_CONF"

# ------------------------------------------------------------------ start ---
"$NGINX" -p "$T/upstream" -e "$T/upstream/error.log" -t -q -c "$T/upstream/nginx.conf" \
    || die "upstream nginx config rejected"
"$NGINX" -p "$T/proxy" -e "$T/proxy/error.log" -t -q -c "$T/proxy/nginx.conf" \
    || die "proxy nginx config rejected"
"$BIN" check --config "$CG_CONF" >/dev/null || die "channelgate config rejected"
"$BIN" check --config "$CGU_CONF" >/dev/null || die "channelgate (unbuffered) config rejected"

"$NGINX" -p "$T/upstream" -e "$T/upstream/error.log" -c "$T/upstream/nginx.conf" -g 'daemon off;' \
    </dev/null >"$T/upstream/stdout.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="upstream nginx"
"$NGINX" -p "$T/proxy" -e "$T/proxy/error.log" -c "$T/proxy/nginx.conf" -g 'daemon off;' \
    </dev/null >"$T/proxy/stdout.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="proxy nginx"
RUST_LOG= "$BIN" run --config "$CG_CONF" </dev/null >"$T/channelgate/channelgate.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="channelgate"
RUST_LOG= "$BIN" run --config "$CGU_CONF" </dev/null >"$T/channelgate-unbuffered/channelgate.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="channelgate (unbuffered)"

alive_all() {
    local p
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || die "${NAME_OF[$p]} (pid $p) is not running"
    done
}

# wait_ready NAME URL: poll (at most ~15s) until URL answers 200 with the fixed body.
wait_ready() {
    local name="$1" url="$2" i got
    for i in $(seq 150); do
        alive_all
        got="$(curl -s --noproxy '*' --max-time 1 -o - -w '|%{http_code}' "$url" 2>/dev/null || true)"
        if [ "$got" = "$BODY"$'\n|200' ]; then
            log "$name ready ($url)"; return 0
        fi
        sleep 0.1
    done
    die "$name not ready after 15s at $url (last answer: ${got:0:200})"
}

URL_DIRECT="http://127.0.0.1:$P_UP/"
URL_NGINX="http://127.0.0.1:$P_NGX/"
URL_CG="http://127.0.0.1:$P_CG/"
URL_CGU="http://127.0.0.1:$P_CGU/"
wait_ready "upstream nginx" "$URL_DIRECT"
wait_ready "proxy nginx" "$URL_NGINX"
wait_ready "channelgate" "$URL_CG"
wait_ready "channelgate (unbuffered)" "$URL_CGU"
for u in "${URL_NGINX}1m" "${URL_CG}1m" "${URL_CGU}1m"; do
    [ "$(curl -s --noproxy '*' --max-time 5 "$u" | wc -c)" -eq $((1 << 20)) ] \
        || die "$u is not 1 MiB"
done
[ "$(curl -s --noproxy '*' --max-time 2 "$URL_DIRECT" | wc -c)" -eq "$BODY_BYTES" ] \
    || die "upstream body is not $BODY_BYTES bytes"
curl -s --noproxy '*' --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_ADMIN/readyz" \
    | grep -qx 200 || die "channelgate /readyz is not 200"

# ------------------------------------------------------------------ rounds ---
TARGETS=(direct nginx channelgate channelgate-unbuffered nginx-1m channelgate-1m channelgate-unbuffered-1m)
declare -A URL=([direct]="$URL_DIRECT" [nginx]="$URL_NGINX" [channelgate]="$URL_CG"
    [channelgate-unbuffered]="$URL_CGU" [nginx-1m]="${URL_NGINX}1m"
    [channelgate-1m]="${URL_CG}1m" [channelgate-unbuffered-1m]="${URL_CGU}1m")
WRK=(wrk -t"$THREADS" -c"$CONNECTIONS" --timeout 5s)
mkdir -p "$T/out"

# CPU busy % of the whole machine over 0.5s (everything we started is idle between runs,
# so this is someone else's load, e.g. a concurrent cargo build).
busy_pct() {
    local a b
    a=($(head -n1 /proc/stat)); sleep 0.5; b=($(head -n1 /proc/stat))
    local tot=0 idle i
    for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    [ "$tot" -gt 0 ] && echo $(((tot - idle) * 100 / tot)) || echo 0
}
# Wait (at most QUIET_WAIT seconds) until the machine is quiet; returns the last reading.
wait_quiet() {
    local b waited=0
    b="$(busy_pct)"
    while [ "$b" -gt "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        [ "$waited" -eq 0 ] && log "machine ${b}% busy with other work; waiting up to ${QUIET_WAIT}s"
        sleep 2; waited=$((waited + 2)); b="$(busy_pct)"
    done
    [ "$b" -gt "$QUIET_PCT" ] && log "WARNING: still ${b}% busy; measuring anyway (figures are skewed)"
    echo "$b"
}

per_run=$((WARM_S + DUR_S + 2))
log "$ROUNDS rounds x ${#TARGETS[@]} targets x (${WARM_S}s warm-up + ${DUR_S}s): about $((ROUNDS * ${#TARGETS[@]} * per_run))s (at most $((ROUNDS * ${#TARGETS[@]} * (per_run + QUIET_WAIT + 60)))s)"
for ((r = 1; r <= ROUNDS; r++)); do
    n=${#TARGETS[@]}
    for ((k = 0; k < n; k++)); do
        t="${TARGETS[$(((k + r - 1) % n))]}"   # rotate the order every round
        alive_all
        busy="$(wait_quiet)"
        echo "busy_before_pct=$busy loadavg_before=$(cut -d' ' -f1 /proc/loadavg)" >"$T/out/$t.$r.env"
        if [ "$WARM_S" -gt 0 ]; then
            timeout $((WARM_S + 30)) "${WRK[@]}" -d"${WARM_S}s" "${URL[$t]}" >/dev/null 2>&1 \
                || die "wrk warm-up against $t failed"
        fi
        out="$T/out/$t.$r.txt"
        timeout $((DUR_S + 30)) "${WRK[@]}" -d"${DUR_S}s" --latency "${URL[$t]}" >"$out" 2>&1 \
            || { cat "$out" >&2; die "wrk against $t failed"; }
        echo "loadavg_after=$(cut -d' ' -f1 /proc/loadavg)" >>"$T/out/$t.$r.env"
        log "round $r/$ROUNDS $t: $(grep -E '^Requests/sec' "$out" || echo '?') (machine ${busy}% busy before)"
    done
done
alive_all
# What buffering did during the runs (the memory/temp-file behaviour of the 1 MiB rows).
curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" \
    | grep -E '^channelgate_(buffered_total|buffer_temp_files)' >"$T/out/buffered.txt" || true

# ----------------------------------------------------------------- report ---
cd "$REPO"
export BENCH_T="$T" BENCH_RESULTS="$RESULTS" BENCH_ROUNDS="$ROUNDS" BENCH_DURATION="$DURATION" \
    BENCH_WARMUP="$WARMUP" BENCH_CONNECTIONS="$CONNECTIONS" BENCH_THREADS="$THREADS" \
    BENCH_BODY_BYTES="$BODY_BYTES" BENCH_NGINX="$NGINX" BENCH_BIN="$BIN" BENCH_QUIET_PCT="$QUIET_PCT"
export BENCH_DIRTY_FILES="$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
export BENCH_GIT_DESCRIBE="$(git describe --always --dirty --tags 2>/dev/null || echo unknown)"
export BENCH_GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
export BENCH_CG_VERSION="$("$BIN" --version 2>&1 | head -n1)"
export BENCH_NGINX_VERSION="$("$NGINX" -v 2>&1 | head -n1)"
export BENCH_WRK_VERSION="$(wrk -v 2>&1 | head -n1 || true)"
export BENCH_RUSTC_VERSION="$(rustc --version 2>/dev/null || echo unknown)"
mkdir -p "$(dirname "$RESULTS")"

python3 - <<'EOF'
import datetime, json, os, platform, re, statistics, sys

E = os.environ
T = E["BENCH_T"]
rounds = int(E["BENCH_ROUNDS"])
targets = ["direct", "nginx", "channelgate", "channelgate-unbuffered",
           "nginx-1m", "channelgate-1m", "channelgate-unbuffered-1m"]
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}

def ms(v):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v)
    if not m:
        raise ValueError(f"unparsable latency {v!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]

def parse(path):
    text = open(path).read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        sys.exit(f"run.sh: cannot parse wrk output {path}:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": round(ms(p50.group(1)), 3),
        "p99_ms": round(ms(p99.group(1)), 3),
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, sock.groups())) if sock else 0,
    }

def env(path):
    out = {}
    for kv in open(path).read().split():
        k, v = kv.split("=", 1)
        out[k] = float(v) if "." in v else int(v)
    return out

def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

now = datetime.datetime.now(datetime.timezone.utc)
timestamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
run_id = now.strftime("%Y%m%dT%H%M%SZ")
params = {
    "duration": E["BENCH_DURATION"], "connections": int(E["BENCH_CONNECTIONS"]),
    "threads": int(E["BENCH_THREADS"]), "rounds": rounds, "warmup": E["BENCH_WARMUP"],
    "body_bytes": int(E["BENCH_BODY_BYTES"]),
    "upstream": "nginx return 200, worker_processes 1, access_log off",
    "nginx_proxy": "worker_processes 2, upstream keepalive 64, proxy_http_version 1.1, access_log off",
    "channelgate": "threads 2, access_log false, level warn, keepalive 128, keepalive_timeout 1s, tcp health check, keepalive_requests 10000000; -unbuffered: request_buffering and response_buffering false",
    "large_body_bytes": 1 << 20,
}
machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model()}
versions = {
    "channelgate": E["BENCH_GIT_DESCRIBE"], "channelgate_commit": E["BENCH_GIT_COMMIT"],
    "channelgate_modified_tracked_files": int(E["BENCH_DIRTY_FILES"]),
    "channelgate_binary": E["BENCH_CG_VERSION"], "rustc": E["BENCH_RUSTC_VERSION"],
    "nginx": E["BENCH_NGINX_VERSION"], "wrk": E["BENCH_WRK_VERSION"],
}

med = {}
lines = []
for t in targets:
    runs = [dict(round=r, **parse(f"{T}/out/{t}.{r}.txt"), **env(f"{T}/out/{t}.{r}.env"))
            for r in range(1, rounds + 1)]
    m = {k: round(statistics.median(x[k] for x in runs), 3) for k in ("rps", "p50_ms", "p99_ms")}
    m["rps"] = round(m["rps"], 1)
    med[t] = m
    med[t]["errors"] = sum(x["non_2xx"] + x["socket_errors"] for x in runs)
    med[t]["range"] = f"{min(x['rps'] for x in runs):.0f}-{max(x['rps'] for x in runs):.0f}"
    med[t]["busy"] = max(x["busy_before_pct"] for x in runs)
    lines.append({
        "bench": "http", "run_id": run_id, "target": t, "stat": "median",
        "rps": m["rps"], "p50_ms": m["p50_ms"], "p99_ms": m["p99_ms"],
        "rounds": runs, "params": params, "machine": machine, "versions": versions,
        "timestamp": timestamp,
    })

with open(E["BENCH_RESULTS"], "a") as f:
    for l in lines:
        f.write(json.dumps(l, separators=(",", ":")) + "\n")

def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"

c, n, d = med["channelgate"], med["nginx"], med["direct"]
print()
print(f"HTTP benchmark {run_id}: wrk -t{params['threads']} -c{params['connections']} "
      f"-d{params['duration']} --latency, median of {rounds} round(s), "
      f"{params['body_bytes']}-byte body, {machine['nproc']} CPUs, {versions['channelgate']}")
print(f"{'target':<26} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   req/s range over rounds")
for t in targets:
    m = med[t]
    print(f"{t:<26} {m['rps']:>10.1f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} {m['errors']:>7}   {m['range']}")
print()
u, n1, c1, u1 = med["channelgate-unbuffered"], med["nginx-1m"], med["channelgate-1m"], med["channelgate-unbuffered-1m"]
print(f"channelgate/nginx   rps {ratio(c['rps'], n['rps'])}   p99 {ratio(c['p99_ms'], n['p99_ms'])}")
print(f"channelgate/direct  rps {ratio(c['rps'], d['rps'])}   p99 {ratio(c['p99_ms'], d['p99_ms'])}")
print(f"buffered/unbuffered rps {ratio(c['rps'], u['rps'])}   p99 {ratio(c['p99_ms'], u['p99_ms'])}   (goal: rps >= 0.95, p99 <= 1.05)")
print(f"1 MiB: channelgate/nginx rps {ratio(c1['rps'], n1['rps'])}   p99 {ratio(c1['p99_ms'], n1['p99_ms'])};"
      f" buffered/unbuffered rps {ratio(c1['rps'], u1['rps'])}   p99 {ratio(c1['p99_ms'], u1['p99_ms'])}")
try:
    print("channelgate buffering during the runs: " + "; ".join(
        l.strip() for l in open(f"{T}/out/buffered.txt") if l.strip()))
except OSError:
    pass
print(f"(rps ratio > 1 and p99 ratio < 1 favour channelgate)")
print(f"appended {len(lines)} lines to {os.path.relpath(E['BENCH_RESULTS'])}")
if any(med[t]["busy"] > int(E["BENCH_QUIET_PCT"]) for t in targets):
    print(f"WARNING: other load on the machine before some runs (up to "
          f"{max(med[t]['busy'] for t in targets)}% CPU busy); compare with care")
if any(med[t]["errors"] for t in targets):
    print("WARNING: some runs had non-2xx responses or socket errors; see the 'rounds' in the JSON")
EOF
