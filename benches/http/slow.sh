#!/usr/bin/env bash
# Slow-clients benchmark (issue 10): the test Django app under gunicorn with 2 sync
# workers, behind nginx (its default proxy_request_buffering / proxy_buffering) and behind
# channelgate (its default buffering), side by side in one run. For each proxy, N clients
# trickle 48 KiB uploads (a piece every 250 ms) and N clients read a 5 MiB download at
# ~10 KB/s while wrk measures ordinary GETs (/whoami/): the app's throughput with slow
# clients around. The same with buffering off ("channelgate-unbuffered") shows what
# happens without it.
#
#   benches/http/slow.sh [--duration 10s] [--clients 20] [--rounds 2] [--no-build] [--keep]
#
# Needs the test venv (scripts/setup) for gunicorn and Django; installs wrk and nginx when
# root. Appends one JSON line per target to benches/results/http-slow.jsonl.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RESULTS="$REPO/benches/results/http-slow.jsonl"
BIN="${CHANNELGATE_BIN:-$REPO/target/release/channelgate}"   # CHANNELGATE_BIN: another build, for a dry run
DURATION=10
CLIENTS=20
ROUNDS=2
BUILD=1
KEEP=0
BENCH=http-slow
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2%s}"; shift 2 ;;
        --clients) CLIENTS="${2:?}"; shift 2 ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
num --duration "$DURATION"; num --clients "$CLIENTS"; num --rounds "$ROUNDS"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 300 ] || die "--duration must be 1s..300s"
[ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 500 ] || die "--clients must be 1..500"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || die "--rounds must be 1..10"

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]})"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        "${missing[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
"$REPO/scripts/setup" >&2 || die "scripts/setup failed (the test venv has gunicorn and Django)"
VENV="$REPO/.venv/bin"
if [ "$BUILD" = 1 ]; then
    (cd "$REPO" && timeout 3600 cargo build --release --locked --bin channelgate) \
        || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN missing (run without --no-build)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/channelgate-bench-slow.XXXXXX")"
T="$TMP"
chmod 755 "$T"
declare -A NAME_OF=()
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary
ulimit -n 65536 2>/dev/null || true

read -r P_APP P_NGX P_CG P_ADMIN P_CGU P_ADMINU < <(python3 -c '
import socket
s = [socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

# ---------------------------------------------------------------- the app ---
APP_DIR="$REPO/tests/django_app"
TESTAPP_DB="$T/app.sqlite3" "$VENV/python" "$APP_DIR/manage.py" prepare >"$T/prepare.log" 2>&1 \
    || die "manage.py prepare failed"
TESTAPP_DB="$T/app.sqlite3" TESTAPP_NAME=bench "$VENV/gunicorn" --chdir "$APP_DIR" \
    --bind "127.0.0.1:$P_APP" --worker-class sync --workers 2 --timeout 120 \
    --no-control-socket testapp.wsgi:application >"$T/gunicorn.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="gunicorn"
wait_port "$P_APP" 30 "$!" || die "gunicorn did not start"

# ---------------------------------------------------------------- proxies ---
mkdir -p "$T/nginx/tmp" "$T/cg" "$T/cgu"
cat >"$T/nginx/nginx.conf" <<EOF
# nginx with its defaults for buffering (proxy_request_buffering on, proxy_buffering on).
worker_processes 2;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $T/nginx/tmp/client_body;
    proxy_temp_path $T/nginx/tmp/proxy;
    fastcgi_temp_path $T/nginx/tmp/fastcgi;
    uwsgi_temp_path $T/nginx/tmp/uwsgi;
    scgi_temp_path $T/nginx/tmp/scgi;
    client_max_body_size 100m;
    server {
        listen 127.0.0.1:$P_NGX;
        location / {
            proxy_pass http://127.0.0.1:$P_APP;
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
cg_conf() {  # DIR PORT ADMIN BUFFERING
    cat <<EOF
[server]
listen = ["127.0.0.1:$2"]
threads = 2
upgrade_sock = "$1/upgrade.sock"
pid_file = "$1/channelgate.pid"
temp_dir = "$1"
[upstream]
servers = ["127.0.0.1:$P_APP"]
request_buffering = $4
response_buffering = $4
[admin]
listen = "127.0.0.1:$3"
[log]
level = "warn"
access_log = false
EOF
}
cg_conf "$T/cg" "$P_CG" "$P_ADMIN" true >"$T/cg/channelgate.toml"
cg_conf "$T/cgu" "$P_CGU" "$P_ADMINU" false >"$T/cgu/channelgate.toml"
"$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" -g 'daemon off;' \
    </dev/null >"$T/nginx/stdout.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="nginx"
RUST_LOG= "$BIN" run --config "$T/cg/channelgate.toml" </dev/null >"$T/cg/channelgate.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="channelgate"
RUST_LOG= "$BIN" run --config "$T/cgu/channelgate.toml" </dev/null >"$T/cgu/channelgate.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="channelgate (unbuffered)"
for p in "$P_NGX" "$P_CG" "$P_CGU"; do
    for i in $(seq 100); do
        curl -s --noproxy '*' --max-time 2 -o /dev/null "http://127.0.0.1:$p/whoami/" && break
        sleep 0.2
    done
done

# ------------------------------------------------------------ slow clients ---
cat >"$T/slow_clients.py" <<'EOF'
"""N trickling uploaders and N slow readers against a proxy, until killed."""
import socket, sys, threading, time

host, port, n = "127.0.0.1", int(sys.argv[1]), int(sys.argv[2])

def uploader():
    while True:
        try:
            s = socket.create_connection((host, port))
            body = b"x" * (48 << 10)
            s.sendall(b"POST /upload/ HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(body))
            for i in range(0, len(body), 2048):
                s.sendall(body[i:i + 2048])
                time.sleep(0.25)
            while s.recv(65536):
                pass
            s.close()
        except OSError:
            time.sleep(0.5)

def reader():
    while True:
        try:
            s = socket.create_connection((host, port))
            s.sendall(b"GET /download/?bytes=5242880 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            while s.recv(1000):
                time.sleep(0.1)
            s.close()
        except OSError:
            time.sleep(0.5)

for f in [uploader] * n + [reader] * n:
    threading.Thread(target=f, daemon=True).start()
while True:
    time.sleep(3600)
EOF

TARGETS=(nginx channelgate channelgate-unbuffered)
declare -A PORT=([nginx]="$P_NGX" [channelgate]="$P_CG" [channelgate-unbuffered]="$P_CGU")
mkdir -p "$T/out"
for ((r = 1; r <= ROUNDS; r++)); do
    for t in "${TARGETS[@]}"; do
        python3 "$T/slow_clients.py" "${PORT[$t]}" "$CLIENTS" >"$T/out/clients.$t.$r.log" 2>&1 &
        cpid=$!
        sleep 3   # let the slow clients take hold of the workers
        timeout $((DURATION + 30)) wrk -t2 -c8 -d"${DURATION}s" --timeout 10s --latency \
            "http://127.0.0.1:${PORT[$t]}/whoami/" >"$T/out/$t.$r.txt" 2>&1 || true
        stop_tree "$cpid"
        log "round $r/$ROUNDS $t: $(grep -E '^Requests/sec' "$T/out/$t.$r.txt" || echo 'no answer')"
        sleep 2   # let the app finish what the killed clients started
    done
done

export BENCH_T="$T" BENCH_RESULTS="$RESULTS" BENCH_ROUNDS="$ROUNDS" BENCH_CLIENTS="$CLIENTS" \
    BENCH_DURATION="$DURATION" BENCH_GIT="$(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)"
python3 - <<'EOF'
import datetime, json, os, re, statistics
E = os.environ
T, rounds = E["BENCH_T"], int(E["BENCH_ROUNDS"])
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
def parse(path):
    text = open(path).read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s|m)", text, re.M)
    to = re.search(r"timeout (\d+)", text)
    return {"rps": float(rps.group(1)) if rps else 0.0,
            "p99_ms": float(p99.group(1)) * UNIT[p99.group(2)] if p99 else None,
            "timeouts": int(to.group(1)) if to else 0}
now = datetime.datetime.now(datetime.timezone.utc)
run_id = now.strftime("%Y%m%dT%H%M%SZ")
med = {}
with open(E["BENCH_RESULTS"], "a") as f:
    for t in ["nginx", "channelgate", "channelgate-unbuffered"]:
        runs = [parse(f"{T}/out/{t}.{r}.txt") for r in range(1, rounds + 1)]
        p99s = [x["p99_ms"] for x in runs if x["p99_ms"] is not None]
        med[t] = {"rps": statistics.median(x["rps"] for x in runs),
                  "p99_ms": statistics.median(p99s) if p99s else None,
                  "timeouts": sum(x["timeouts"] for x in runs)}
        f.write(json.dumps({"bench": "http-slow", "run_id": run_id, "target": t, **med[t],
                            "rounds": runs, "clients": int(E["BENCH_CLIENTS"]),
                            "duration_s": int(E["BENCH_DURATION"]), "version": E["BENCH_GIT"],
                            "app": "gunicorn --workers 2 --worker-class sync, tests/django_app /whoami/"},
                           separators=(",", ":")) + "\n")
print(f"\nslow clients {run_id}: {E['BENCH_CLIENTS']} trickling uploads + {E['BENCH_CLIENTS']} slow 5 MiB readers, "
      f"wrk -t2 -c8 GET /whoami/, median of {rounds}")
print(f"{'target':<24} {'req/s':>8} {'p99 ms':>9} {'timeouts':>9}")
for t, m in med.items():
    p99 = f"{m['p99_ms']:.1f}" if m["p99_ms"] is not None else "-"
    print(f"{t:<24} {m['rps']:>8.1f} {p99:>9} {m['timeouts']:>9}")
n, c = med["nginx"], med["channelgate"]
print(f"channelgate/nginx rps {c['rps'] / n['rps']:.2f}" if n["rps"] else "nginx answered nothing")
EOF
