#!/usr/bin/env bash
# TLS benchmark: channelgate vs nginx terminating TLS with the same ECDSA P-256
# certificate (made here with openssl) in front of the same fixed 100-byte nginx
# upstream, in one run, side by side. Cases:
#   handshake  full TLS handshakes/s: h2load -n B -c B -m 1 (each client one request on
#              its own new connection; h2load never resumes a session), repeated in
#              batches of B for the duration; rate = handshakes done / h2load's time
#   resumed    handshakes/s with session resumption: wrk with "Connection: close" (a new
#              connection per request; wrk resumes the previous TLS session, so this
#              is TLS 1.3 PSK resumption, not a full handshake)
#   h1         keep-alive req/s over HTTP/1.1 (wrk, with p99)
#   h2         keep-alive req/s over HTTP/2 (h2load; it gives no percentiles, so the
#              mean and max request time are reported instead of a p99)
# The targets alternate for R rounds; the median of the rounds is reported.
#
#   benches/tls/run.sh [--duration 5s] [--connections 64] [--streams 10] [--rounds 2]
#                      [--threads 2] [--batch 256] [--keep]
#
# CHANNELGATE_BIN overrides the binary (default target/release/channelgate if it exists,
# else /tmp/cg-bench-51ad90e). Appends one JSON line per target x case to
# benches/results/tls.jsonl and prints a table with channelgate/nginx ratios.
# Everything listens on, and all traffic goes to, 127.0.0.1 only. See README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RESULTS="$REPO/benches/results/tls.jsonl"
if [ -n "${CHANNELGATE_BIN:-}" ]; then BIN="$CHANNELGATE_BIN"
elif [ -x "$REPO/target/release/channelgate" ]; then BIN="$REPO/target/release/channelgate"
else BIN=/tmp/cg-bench-51ad90e; fi

DURATION=5
CONNECTIONS=64
STREAMS=10      # h2load -m: concurrent streams per HTTP/2 connection
ROUNDS=2
THREADS=2
BATCH=256       # handshake case: connections per h2load batch (all opened at once)
KEEP=0

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
BENCH=tls
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2:?}"; shift 2 ;;
        --connections) CONNECTIONS="${2:?}"; shift 2 ;;
        --streams) STREAMS="${2:?}"; shift 2 ;;
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --threads) THREADS="${2:?}"; shift 2 ;;
        --batch) BATCH="${2:?}"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
DURATION="${DURATION%s}"
num --duration "$DURATION"; num --connections "$CONNECTIONS"; num --streams "$STREAMS"
num --rounds "$ROUNDS"; num --threads "$THREADS"; num --batch "$BATCH"
[ "$BATCH" -ge "$THREADS" ] && [ "$BATCH" -le 4096 ] || die "--batch must be >= --threads and <= 4096"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "--duration must be 1..600 (seconds)"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "--rounds must be 1..20"
[ "$THREADS" -ge 1 ] && [ "$THREADS" -le 64 ] || die "--threads must be 1..64"
[ "$STREAMS" -ge 1 ] && [ "$STREAMS" -le 1000 ] || die "--streams must be 1..1000"
[ "$CONNECTIONS" -ge "$THREADS" ] && [ "$CONNECTIONS" -le 10000 ] \
    || die "--connections must be >= --threads and <= 10000"

# ------------------------------------------------------------------ tools ---
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
[ -x "$NGINX" ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (Debian)"
    apt_install "${missing[@]}" || die "could not install ${missing[*]} (see /tmp/cg-$BENCH-apt.log)"
fi
[ -x "$BIN" ] || die "$BIN missing (set CHANNELGATE_BIN or build target/release/channelgate)"

# ---------------------------------------------------------------- cleanup ---
TMP="$(mktemp -d "${TMPDIR:-/tmp}/channelgate-bench-tls.XXXXXX")"
T="$TMP"
chmod 755 "$T"   # nginx workers run as nobody when started by root
declare -A NAME_OF=()
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
use_private_binary
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

read -r P_UP P_NGX P_CG P_CGPLAIN P_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(5):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*(s.getsockname()[1] for s in socks))
for s in socks: s.close()
EOF
)
[ -n "${P_ADMIN:-}" ] || die "could not get free ports"

BODY='channelgate bench: a fixed 100-byte response body, the same bytes for every request to the upstream'
BODY_BYTES=$(( ${#BODY} + 1 ))

# ------------------------------------------------------------ certificate ---
# One ECDSA P-256 key (PKCS#8) and a self-signed certificate for localhost/127.0.0.1,
# used by both targets.
mkdir -p "$T/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$T/pki/key.pem" -out "$T/pki/cert.pem" >"$T/pki/openssl.log" 2>&1 \
    || die "openssl could not make the certificate"
chmod 644 "$T/pki/key.pem"   # nginx workers (nobody) never read it, but the master may drop root

# ---------------------------------------------------------------- configs ---
mkdir -p "$T/upstream/tmp" "$T/proxy/tmp" "$T/channelgate"

cat >"$T/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $T/upstream/nginx.pid;
error_log $T/upstream/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
$(nginx_common "$T/upstream")
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$P_UP;
        default_type text/plain;
        location / { return 200 "$BODY\n"; }
    }
}
EOF

nginx_proxy_conf "$T/proxy" "$P_UP" "        listen 127.0.0.1:$P_NGX ssl http2;
        ssl_certificate     $T/pki/cert.pem;
        ssl_certificate_key $T/pki/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;"

CG_CONF="$T/channelgate/channelgate.toml"
cat >"$CG_CONF" <<EOF
[server]
listen = ["127.0.0.1:$P_CGPLAIN"]
threads = 2
grace_period = "2s"
upgrade_sock = "$T/channelgate/upgrade.sock"
pid_file = "$T/channelgate/channelgate.pid"
keepalive_requests = 10000000
temp_dir = "$T/channelgate"

[tls]
listen = ["127.0.0.1:$P_CG"]
certificates = [{ cert = "$T/pki/cert.pem", key = "$T/pki/key.pem" }]
min_version = "1.2"
http2 = true

[upstream]
servers = ["127.0.0.1:$P_UP"]
connect_timeout = "2s"
read_timeout = "60s"
write_timeout = "60s"
keepalive = 128
keepalive_timeout = "1s"
retries = 1
health_check = { kind = "tcp", interval = "5s", timeout = "2s", rise = 1, fall = 1 }

[admin]
listen = "127.0.0.1:$P_ADMIN"
enabled = true

[log]
level = "warn"
access_log = false
format = "text"
EOF

# ------------------------------------------------------------------ start ---
"$NGINX" -p "$T/upstream" -e "$T/upstream/error.log" -t -q -c "$T/upstream/nginx.conf" \
    || die "upstream nginx config rejected"
"$NGINX" -p "$T/proxy" -e "$T/proxy/error.log" -t -q -c "$T/proxy/nginx.conf" \
    || die "TLS nginx config rejected"
"$BIN" check --config "$CG_CONF" >"$T/channelgate/check.log" 2>&1 \
    || { cat "$T/channelgate/check.log" >&2; die "channelgate config rejected"; }

"$NGINX" -p "$T/upstream" -e "$T/upstream/error.log" -c "$T/upstream/nginx.conf" -g 'daemon off;' \
    </dev/null >"$T/upstream/stdout.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="upstream nginx"
"$NGINX" -p "$T/proxy" -e "$T/proxy/error.log" -c "$T/proxy/nginx.conf" -g 'daemon off;' \
    </dev/null >"$T/proxy/stdout.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="TLS nginx"
RUST_LOG= "$BIN" run --config "$CG_CONF" </dev/null >"$T/channelgate/channelgate.log" 2>&1 &
PIDS+=("$!"); NAME_OF[$!]="channelgate"

alive_all() {
    local p
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || die "${NAME_OF[$p]} (pid $p) is not running"
    done
}

# wait_ready NAME URL [CURL ARGS]: poll (at most ~15s) until URL answers 200 with the body.
wait_ready() {
    local name="$1" url="$2" i got; shift 2
    for i in $(seq 150); do
        alive_all
        got="$(curl -s --noproxy '*' --max-time 1 --cacert "$T/pki/cert.pem" "$@" -o - -w '|%{http_code}' "$url" 2>/dev/null || true)"
        if [ "$got" = "$BODY"$'\n|200' ]; then log "$name ready ($url $*)"; return 0; fi
        sleep 0.1
    done
    die "$name not ready after 15s at $url (last answer: ${got:0:200})"
}
URL_NGX="https://localhost:$P_NGX/"
URL_CG="https://localhost:$P_CG/"
RESOLVE=(--resolve "localhost:$P_NGX:127.0.0.1" --resolve "localhost:$P_CG:127.0.0.1")
wait_ready "upstream nginx" "http://127.0.0.1:$P_UP/"
for u in "$URL_NGX" "$URL_CG"; do
    wait_ready "TLS ${u}" "$u" "${RESOLVE[@]}" --http1.1
    # Both must really negotiate h2 by ALPN, or the h2 case would measure something else.
    v="$(curl -s --noproxy '*' --max-time 2 --cacert "$T/pki/cert.pem" "${RESOLVE[@]}" --http2 \
        -o /dev/null -w '%{http_version}' "$u" || true)"
    [ "$v" = 2 ] || die "$u does not speak HTTP/2 over ALPN (curl saw HTTP/$v)"
done

# ------------------------------------------------------------------ rounds ---
TARGETS=(nginx channelgate)
CASES=(handshake resumed h1 h2)
declare -A URL=([nginx]="https://127.0.0.1:$P_NGX/" [channelgate]="https://127.0.0.1:$P_CG/")
mkdir -p "$T/out"

run_case() {  # TARGET CASE OUT
    local u="${URL[$1]}"
    case "$2" in
        handshake)
            # Batches of BATCH fresh clients with one request each, until DURATION is up.
            local end=$(( $(date +%s%N) + DURATION * 1000000000 ))
            : >"$3"
            while [ "$(date +%s%N)" -lt "$end" ]; do
                timeout 60 h2load -t"$THREADS" -c"$BATCH" -n"$BATCH" -m1 "$u" >>"$3" 2>&1 || return 1
            done
            return 0 ;;
        resumed) timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
                       --timeout 5s --latency -H 'Connection: close' "$u" ;;
        h1) timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
                --timeout 5s --latency "$u" ;;
        h2) timeout $((DURATION + 30)) h2load -t"$THREADS" -c"$CONNECTIONS" -m"$STREAMS" \
                -D"$DURATION" "$u" ;;
    esac >"$3" 2>&1
}

log "$ROUNDS rounds x ${#TARGETS[@]} targets x ${#CASES[@]} cases x ${DURATION}s: about $((ROUNDS * 6 * (DURATION + 1)))s"
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${CASES[@]}"; do
        for ((k = 0; k < 2; k++)); do
            t="${TARGETS[$(((k + r - 1) % 2))]}"   # alternate who goes first each round
            alive_all
            echo "loadavg_before=$(cut -d' ' -f1 /proc/loadavg)" >"$T/out/$t.$c.$r.env"
            out="$T/out/$t.$c.$r.txt"
            run_case "$t" "$c" "$out" || { cat "$out" >&2; die "$c against $t failed"; }
            log "round $r/$ROUNDS $c $t: $(if [ "$c" = handshake ]; then echo "$(grep -c '^finished in' "$out") batches of $BATCH"; else grep -E '^Requests/sec|^finished in' "$out" || echo '?'; fi)"
        done
    done
done
alive_all
curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" \
    | grep -iE '^channelgate_[a-z_]*(tls|handshake)' >"$T/out/cg-tls-metrics.txt" || true

# ----------------------------------------------------------------- report ---
cd "$REPO"
export BENCH_T="$T" BENCH_RESULTS="$RESULTS" BENCH_ROUNDS="$ROUNDS" BENCH_DURATION="$DURATION" \
    BENCH_CONNECTIONS="$CONNECTIONS" BENCH_THREADS="$THREADS" BENCH_STREAMS="$STREAMS" BENCH_BATCH="$BATCH" \
    BENCH_BODY_BYTES="$BODY_BYTES"
export BENCH_BIN_SOURCE="$( [ -n "${CHANNELGATE_BIN:-}" ] && echo "$CHANNELGATE_BIN" || { [ -x "$REPO/target/release/channelgate" ] && echo "$REPO/target/release/channelgate" || echo /tmp/cg-bench-51ad90e; })"
export BENCH_GIT_DESCRIBE="$(git describe --always --dirty --tags 2>/dev/null || echo unknown)"
export BENCH_GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
export BENCH_CG_VERSION="$("$BIN" --version 2>&1 | head -n1)"
export BENCH_NGINX_VERSION="$("$NGINX" -v 2>&1 | head -n1)"
export BENCH_WRK_VERSION="$(wrk -v 2>&1 | head -n1 || true)"
export BENCH_H2LOAD_VERSION="$(h2load --version 2>&1 | head -n1 || true)"
export BENCH_OPENSSL_VERSION="$(openssl version 2>&1 | head -n1)"
mkdir -p "$(dirname "$RESULTS")"

python3 - <<'EOF'
import datetime, json, os, platform, re, statistics, sys

E = os.environ
T = E["BENCH_T"]
rounds = int(E["BENCH_ROUNDS"])
targets, cases = ["nginx", "channelgate"], ["handshake", "resumed", "h1", "h2"]
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}

def ms(v):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v)
    if not m:
        raise ValueError(f"unparsable latency {v!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]

def parse_wrk(text, path):
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        sys.exit(f"run.sh: cannot parse wrk output {path}:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"rps": float(rps.group(1)), "p50_ms": round(ms(p50.group(1)), 3),
            "p99_ms": round(ms(p99.group(1)), 3), "requests": int(total.group(1)),
            "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)}

def parse_h2load(text, path):
    fin = re.search(r"^finished in .*?, ([0-9.]+) req/s", text, re.M)
    reqs = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx", text, re.M)
    t = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    proto = re.search(r"^Application protocol: (\S+)", text, re.M)
    if not (fin and reqs and t):
        sys.exit(f"run.sh: cannot parse h2load output {path}:\n{text}")
    if not proto or proto.group(1) != "h2":
        sys.exit(f"run.sh: h2load did not negotiate h2 ({path}):\n{text}")
    done = int(reqs.group(3))
    ok2xx = int(codes.group(1)) if codes else 0
    return {"rps": float(fin.group(1)), "p99_ms": None, "mean_ms": round(ms(t.group(3)), 3),
            "max_ms": round(ms(t.group(2)), 3), "requests": done,
            "errors": int(reqs.group(5)) + int(reqs.group(6)) + (done - ok2xx)}

def parse_batches(text, path):
    """h2load runs of B one-request clients: full handshakes/s over all batches."""
    fins = re.findall(r"^finished in ([0-9.]+(?:us|ms|s|m|h)),", text, re.M)
    reqs = re.findall(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text, re.M)
    codes = re.findall(r"^status codes: (\d+) 2xx", text, re.M)
    conn = re.findall(r"^time for connect:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    protos = set(re.findall(r"^Application protocol: (\S+)", text, re.M))
    if not fins or len(fins) != len(reqs) or not conn:
        sys.exit(f"run.sh: cannot parse h2load output {path}:\n{text[-3000:]}")
    if protos != {"h2"}:
        sys.exit(f"run.sh: h2load did not negotiate h2 in every batch ({path}): {protos}")
    secs = sum(ms(x) for x in fins) / 1000.0
    done = sum(int(x[2]) for x in reqs)
    ok = sum(int(x) for x in codes)
    return {"rps": round(done / secs, 2) if secs else 0.0, "p99_ms": None,
            "batches": len(fins), "requests": done,
            "connect_mean_ms": round(statistics.mean(ms(x[2]) for x in conn), 3),
            "connect_max_ms": round(max(ms(x[1]) for x in conn), 3),
            "errors": sum(int(x[4]) + int(x[5]) for x in reqs) + (done - ok)}

def env(path):
    out = {}
    for kv in open(path).read().split():
        k, v = kv.split("=", 1)
        out[k] = float(v)
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
    "duration_s": int(E["BENCH_DURATION"]), "connections": int(E["BENCH_CONNECTIONS"]),
    "threads": int(E["BENCH_THREADS"]), "h2_streams": int(E["BENCH_STREAMS"]), "rounds": rounds,
    "body_bytes": int(E["BENCH_BODY_BYTES"]),
    "certificate": "ECDSA P-256, self-signed, same file for both",
    "handshake": "h2load -n B -c B -m 1 in batches for the duration (one request per new connection, full handshake, no resumption); rate = done / sum of h2load times",
    "handshake_batch": int(E["BENCH_BATCH"]),
    "resumed": "wrk -H 'Connection: close' (new connection per request; wrk resumes sessions: TLS 1.3 PSK)",
    "h1": "wrk keep-alive over TLS", "h2": "h2load keep-alive over TLS (no percentiles: mean/max)",
    "upstream": "nginx return 200, worker_processes 1, access_log off",
    "nginx": "worker_processes 2, listen ssl http2, ssl_protocols TLSv1.2 TLSv1.3, upstream keepalive 64, access_log off",
    "channelgate": "threads 2, [tls] http2 true, min_version 1.2, access_log false, level warn, upstream keepalive 128",
}
machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model(),
           "loadavg_at_report": float(open("/proc/loadavg").read().split()[0])}
versions = {
    "channelgate": E["BENCH_GIT_DESCRIBE"], "channelgate_commit": E["BENCH_GIT_COMMIT"],
    "channelgate_binary": E["BENCH_CG_VERSION"], "channelgate_binary_path": E["BENCH_BIN_SOURCE"],
    "nginx": E["BENCH_NGINX_VERSION"], "wrk": E["BENCH_WRK_VERSION"],
    "h2load": E["BENCH_H2LOAD_VERSION"], "openssl": E["BENCH_OPENSSL_VERSION"],
}

med, lines = {}, []
for c in cases:
    for t in targets:
        runs = []
        for r in range(1, rounds + 1):
            path = f"{T}/out/{t}.{c}.{r}.txt"
            text = open(path).read()
            res = (parse_h2load(text, path) if c == "h2" else
                   parse_batches(text, path) if c == "handshake" else parse_wrk(text, path))
            runs.append(dict(round=r, **res, **env(f"{T}/out/{t}.{c}.{r}.env")))
        m = {"rps": round(statistics.median(x["rps"] for x in runs), 1)}
        for k in ("p50_ms", "p99_ms", "mean_ms", "max_ms", "connect_mean_ms", "connect_max_ms"):
            vals = [x[k] for x in runs if x.get(k) is not None]
            m[k] = round(statistics.median(vals), 3) if vals else None
        m["errors"] = sum(x["errors"] for x in runs)
        m["range"] = f"{min(x['rps'] for x in runs):.0f}-{max(x['rps'] for x in runs):.0f}"
        med[(t, c)] = m
        line = {"bench": "tls", "run_id": run_id, "target": t, "case": c, "stat": "median",
                "rps": m["rps"], "p99_ms": m["p99_ms"]}
        if c == "handshake":
            line["handshakes_s"] = m["rps"]
        for k in ("p50_ms", "mean_ms", "max_ms", "connect_mean_ms", "connect_max_ms"):
            if m[k] is not None:
                line[k] = m[k]
        line.update({"errors": m["errors"], "rounds": runs, "params": params,
                     "machine": machine, "versions": versions, "timestamp": timestamp})
        lines.append(line)

with open(E["BENCH_RESULTS"], "a") as f:
    for l in lines:
        f.write(json.dumps(l, separators=(",", ":")) + "\n")

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"
def f(v):
    return "-" if v is None else f"{v:.2f}"

label = {"handshake": "full handshakes/s (h2load, 1 req/conn)",
         "resumed": "resumed handshakes/s (wrk, Connection: close)",
         "h1": "HTTP/1.1 keep-alive req/s (wrk)", "h2": "HTTP/2 keep-alive req/s (h2load)"}
print()
print(f"TLS benchmark {run_id}: {params['connections']} connections, {params['threads']} threads, "
      f"{params['duration_s']}s per run, h2 -m{params['h2_streams']}, median of {rounds} round(s), "
      f"{machine['nproc']} CPUs, load {machine['loadavg_at_report']}, {versions['channelgate_binary_path']}")
print(f"{'case':<44} {'nginx':>10} {'channelgate':>12} {'ratio':>6}   {'nginx ms':>9} {'cg ms':>8}   errors n/cg   (ms: p99 for wrk, mean for h2load)")
for c in cases:
    n, g = med[("nginx", c)], med[("channelgate", c)]
    lat = {"h2": "mean_ms", "handshake": "connect_mean_ms"}.get(c, "p99_ms")
    print(f"{label[c]:<44} {n['rps']:>10.1f} {g['rps']:>12.1f} {ratio(g['rps'], n['rps']):>6}   "
          f"{f(n[lat]):>9} {f(g[lat]):>8}   {n['errors']}/{g['errors']}"
          + ("   (mean ms: h2load gives no p99)" if c == "h2" else
             "   (mean connect ms: h2load gives no p99)" if c == "handshake" else ""))
hs = med[("channelgate", "handshake")]["rps"] / max(med[("nginx", "handshake")]["rps"], 1e-9)
h2 = med[("channelgate", "h2")]["rps"] / max(med[("nginx", "h2")]["rps"], 1e-9)
print(f"goals: handshakes/s >= nginx: {'met' if hs >= 1 else 'NOT met'} ({hs:.2f}x); "
      f"h2 req/s >= 0.8x nginx: {'met' if h2 >= 0.8 else 'NOT met'} ({h2:.2f}x)")
try:
    extra = "; ".join(l.strip() for l in open(f"{T}/out/cg-tls-metrics.txt") if l.strip())
    if extra:
        print("channelgate TLS metrics: " + extra[:600])
except OSError:
    pass
print(f"appended {len(lines)} lines to {os.path.relpath(E['BENCH_RESULTS'])}")
if any(m["errors"] for m in med.values()):
    print("WARNING: some runs had errors (non-2xx, socket errors, failed streams); see 'rounds' in the JSON")
EOF
