#!/usr/bin/env bash
# Static files and compression: wrk against nginx and channelgate serving the same tree in
# one run. Cases: a 2 KiB file, a 100 KiB file, a 10 MiB file (keep-alive throughout), and
# a proxied 100 KiB JSON answer compressed with gzip (nginx `gzip on` against channelgate
# `[compression]`, both at level 5, the JSON coming from the same fixed nginx upstream).
#
#   benches/static/run.sh [--duration 10s] [--connections 32] [--rounds 1] [--threads 2]
#                         [--no-build] [--keep]
#
# Appends one JSON line per case and target to benches/results/static.jsonl and prints a
# table with channelgate/nginx ratios. Everything listens on 127.0.0.1 only.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RESULTS="$REPO/benches/results/static.jsonl"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/channelgate"
DURATION=10s
CONNECTIONS=32
ROUNDS=1
THREADS=2
BUILD=1
KEEP=0

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
BENCH=static
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2:?}"; shift 2 ;;
        --connections) CONNECTIONS="${2:?}"; shift 2 ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --threads) THREADS="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$DURATION" =~ ^([0-9]+)s$ ]] || die "--duration must be like 10s"
DUR_S="${BASH_REMATCH[1]}"
[ "$DUR_S" -ge 1 ] && [ "$DUR_S" -le 300 ] || die "--duration must be 1s..300s"
num --connections "$CONNECTIONS"; num --rounds "$ROUNDS"; num --threads "$THREADS"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || die "--rounds must be 1..10"
[ "$CONNECTIONS" -ge "$THREADS" ] && [ "$CONNECTIONS" -le 2000 ] || die "--connections must be >= --threads and <= 2000"

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}" || die "could not install ${missing[*]} (see /tmp/cg-$BENCH-apt.log)"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

if [ "$BUILD" = 1 ]; then
    log "cargo build --release (a no-op when up to date)"
    (cd "$REPO" && timeout 3600 cargo build --release --locked --bin channelgate) \
        || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN missing (run without --no-build)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/channelgate-bench.XXXXXX")"
T="$TMP"
chmod 755 "$T"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary
ulimit -n 65536 2>/dev/null || true

read -r P_UP P_NGX P_CG P_ADMIN < <(python3 -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

# ------------------------------------------------------------------- tree ---
W="$T/www/static"
mkdir -p "$W" "$T/api" "$T/upstream/tmp" "$T/nginx/tmp" "$T/cg"
head -c 2048 /dev/urandom >"$W/2k.bin"
head -c $((100 * 1024)) /dev/urandom >"$W/100k.bin"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$W/10m.bin"
python3 -c '
import json, random
random.seed(7)
rows = []
while len(json.dumps(rows)) < 100 * 1024:
    rows.append({"id": len(rows), "name": "node-%d" % random.randrange(10**6),
                 "x": random.random(), "tags": random.sample(["a", "b", "c", "d", "e"], 2)})
print(json.dumps(rows))' >"$T/api/data.json"

temp_paths() {
    cat <<EOF
    access_log off;
    client_body_temp_path $1/tmp/cb; proxy_temp_path $1/tmp/p; fastcgi_temp_path $1/tmp/f;
    uwsgi_temp_path $1/tmp/u; scgi_temp_path $1/tmp/s;
    keepalive_requests 10000000;
EOF
}

cat >"$T/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $T/upstream/nginx.pid;
events { worker_connections 4096; }
http {
$(temp_paths "$T/upstream")
    server {
        listen 127.0.0.1:$P_UP;
        location /api/ { alias $T/api/; default_type application/json; }
    }
}
EOF

# The nginx under test: 2 workers (= channelgate's threads), sendfile on as Debian ships it.
cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $T/nginx/nginx.pid;
events { worker_connections 4096; }
http {
$(temp_paths "$T/nginx")
    sendfile on;
    tcp_nopush on;
    upstream app { server 127.0.0.1:$P_UP; keepalive 64; }
    server {
        listen 127.0.0.1:$P_NGX;
        location /static/ { alias $W/; etag on; }
        location /api/ {
            proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
            gzip on; gzip_proxied any; gzip_comp_level 5; gzip_types application/json;
            gzip_min_length 1024; gzip_vary on;
        }
    }
}
EOF

cat >"$T/cg/channelgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_CG"]
threads = 2
upgrade_sock = "$T/cg/upgrade.sock"
pid_file = "$T/cg/channelgate.pid"
[upstream]
servers = ["127.0.0.1:$P_UP"]
keepalive = 128
health_check = { kind = "tcp", interval = "5s" }
[admin]
listen = "127.0.0.1:$P_ADMIN"
[log]
level = "warn"
access_log = false
[compression]
enabled = true
level = 5
[[static]]
prefix = "/static/"
root = "$W"
EOF

for n in upstream nginx; do
    "$NGINX" -p "$T/$n" -e "$T/$n/error.log" -t -q -c "$T/$n/nginx.conf" || die "$n config rejected"
    "$NGINX" -p "$T/$n" -e "$T/$n/error.log" -c "$T/$n/nginx.conf" -g 'daemon off;' \
        </dev/null >"$T/$n/stdout.log" 2>&1 &
    PIDS+=("$!")
done
"$BIN" check --config "$T/cg/channelgate.toml" >/dev/null || die "channelgate config rejected"
RUST_LOG= "$BIN" run --config "$T/cg/channelgate.toml" </dev/null >"$T/cg/channelgate.log" 2>&1 &
PIDS+=("$!")
for p in "$P_UP" "$P_NGX" "$P_CG"; do wait_port "$p" 15 "${PIDS[-1]}" || die "port $p not ready"; done
sleep 1  # the upstream health check marks the server up

# Both must answer every case with the same bytes (after decoding) before we measure.
for path in /static/2k.bin /static/100k.bin /static/10m.bin; do
    [ "$(curl -s "http://127.0.0.1:$P_NGX$path" | sha256sum)" = "$(curl -s "http://127.0.0.1:$P_CG$path" | sha256sum)" ] \
        || die "nginx and channelgate differ on $path"
done
for port in "$P_NGX" "$P_CG"; do
    enc="$(curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%header{content-encoding}' "http://127.0.0.1:$port/api/data.json")"
    [ "$enc" = gzip ] || die "no gzip from port $port (got '$enc')"
    [ "$(curl -s --compressed "http://127.0.0.1:$port/api/data.json" | sha256sum)" = "$(sha256sum <"$T/api/data.json")" ] \
        || die "decoded JSON differs on port $port"
done

declare -A PATH_OF=([2k]=/static/2k.bin [100k]=/static/100k.bin [10m]=/static/10m.bin [gzip-json]=/api/data.json)
declare -A PORT_OF=([nginx]=$P_NGX [channelgate]=$P_CG)
mkdir -p "$T/out"
for ((r = 1; r <= ROUNDS; r++)); do
    for c in 2k 100k 10m gzip-json; do
        for t in nginx channelgate; do
            hdr=(); [ "$c" = gzip-json ] && hdr=(-H 'Accept-Encoding: gzip')
            out="$T/out/$c.$t.$r.txt"
            timeout $((DUR_S + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DUR_S}s" --latency "${hdr[@]}" \
                "http://127.0.0.1:${PORT_OF[$t]}${PATH_OF[$c]}" >"$out" 2>&1 || die "wrk $c $t failed"
            log "round $r $c $t: $(grep -E '^Requests/sec' "$out") (load $(cut -d' ' -f1 /proc/loadavg))"
        done
    done
done

python3 - "$T/out" "$RESULTS" "$ROUNDS" "$DURATION" "$CONNECTIONS" <<'EOF'
import json, re, statistics, sys, time
out, results, rounds, duration, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
size = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
def parse(p):
    t = open(p).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    v, u = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", t).groups()
    p99v, p99u = re.search(r"\s99%\s+([\d.]+)(\w+)", t).groups()
    return rps, float(v) * size[u] / 2**20, float(p99v) * unit[p99u]
rows = {}
with open(results, "a") as f:
    for c in ["2k", "100k", "10m", "gzip-json"]:
        for tgt in ["nginx", "channelgate"]:
            runs = [parse(f"{out}/{c}.{tgt}.{r}.txt") for r in range(1, rounds + 1)]
            rps, mbs, p99 = (statistics.median(x[i] for x in runs) for i in range(3))
            rows[(c, tgt)] = (rps, mbs, p99)
            f.write(json.dumps({"bench": "static", "case": c, "target": tgt, "rps": rps, "mib_s": mbs,
                                "p99_ms": p99, "rounds": rounds, "duration": duration,
                                "connections": int(conns), "time": int(time.time())}) + "\n")
print(f"{'case':10} {'target':12} {'req/s':>10} {'MiB/s':>9} {'p99 ms':>8}  cg/nginx req/s")
for c in ["2k", "100k", "10m", "gzip-json"]:
    for tgt in ["nginx", "channelgate"]:
        rps, mbs, p99 = rows[(c, tgt)]
        ratio = f"{rps / rows[(c, 'nginx')][0]:.2f}x" if tgt == "channelgate" else ""
        print(f"{c:10} {tgt:12} {rps:10.0f} {mbs:9.1f} {p99:8.2f}  {ratio}")
EOF
