#!/usr/bin/env bash
# RFC 6455 and RFC 7692 conformance: runs every Autobahn fuzzingclient case, 1.* to 13.*
# (kosoku, from PyPI), against an `inbound = "echo"` route served by channelgate, with
# keepalive pings off. 12.* and 13.* are permessage-deflate (the route's default
# `compression = "deflate"`, with compression_min_size = 0 so every echo is compressed).
# Prints a summary and exits non-zero unless every case is OK, NON-STRICT or
# INFORMATIONAL. Usage: tests/conformance/autobahn.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup >/dev/null
OUT="${1:-target/autobahn}"
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build --release --locked -q
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port); DUMMY=$(free_port)
CONF="$OUT/channelgate.toml"
cat > "$CONF" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
pid_file = "$OUT/cg.pid"
upgrade_sock = "$OUT/cg-upgrade.sock"
[admin]
listen = "127.0.0.1:$ADMIN"
[upstream]
servers = ["127.0.0.1:$DUMMY"]
[log]
level = "warn"
access_log = false
[[ws]]
path = "/*"
inbound = "echo"
allowed_origins = ["*"]
max_message = "64MiB"
ping_interval = "0s"
send_queue = 1024
send_queue_bytes = "64MiB"
# The fuzzer sends thousands of frames at once (9.7/9.8): no rate limit worth the name.
inbound_rate = "1000000/s"
inbound_burst = 100000
send_timeout = "60s"
compression = "deflate"
compression_min_size = 0
TOML
target/release/channelgate run --config "$CONF" > "$OUT/channelgate.log" 2>&1 &
CG=$!
trap 'kill $CG 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break
    sleep 0.1
done
timeout 1200 .venv/bin/kosoku -m fuzzingclient -p 2 -o "$OUT" "127.0.0.1:$PORT" \
    > "$OUT/kosoku.log" 2>&1 || true
.venv/bin/python - "$OUT" <<'PY'
import json, sys, glob, os, collections
out = sys.argv[1]
paths = glob.glob(os.path.join(out, "**", "index.json"), recursive=True)
if not paths:
    print("autobahn: no index.json written; see", os.path.join(out, "kosoku.log")); sys.exit(2)
index = json.load(open(paths[0]))
results = {}
for agent, cases in index.items():
    for case, r in cases.items():
        results[case] = r
counts = collections.Counter(r["behavior"] for r in results.values())
closes = collections.Counter(r.get("behaviorClose", "?") for r in results.values())
bad = {c: r for c, r in results.items() if r["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")
       or r.get("behaviorClose", "OK") not in ("OK", "INFORMATIONAL", "NON-STRICT")}
print(f"autobahn: {len(results)} cases (1.* to 13.*): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
print("autobahn: close behaviour: " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())))
for c, r in sorted(bad.items())[:40]:
    print(f"  FAILED {c}: behavior={r['behavior']} close={r.get('behaviorClose')}")
sys.exit(1 if bad else 0)
PY
