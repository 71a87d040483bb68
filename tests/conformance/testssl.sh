#!/usr/bin/env bash
# TLS audit: Debian's testssl.sh against channelgate's TLS listener (ECDSA P-256 certificate
# from a throw-away CA that testssl is told to trust). Fails when SSLv2/SSLv3/TLS 1.0/1.1
# are offered, when a NULL/anonymous/export/LOW/3DES/RC4/obsolete cipher is offered, when
# forward secrecy is missing, or when any finding is rated MEDIUM, HIGH or CRITICAL
# (this includes every vulnerability check: Heartbleed, CCS, ROBOT, renegotiation, CRIME,
# POODLE, SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13, ...), except two that are accepted
# and printed as such:
#   cipher_order      rustls lets the client choose among its suites, all AEAD with forward
#                     secrecy; Mozilla's "intermediate" profile recommends exactly that.
#   security_headers  X-Frame-Options, CSP, ... are the application's to send (HSTS, the one
#                     that belongs to the TLS edge, is checked: HSTS_time).
# Prints a summary; the full report is in OUTDIR (default target/testssl).
# Usage: tests/conformance/testssl.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup >/dev/null
OUT="${1:-target/testssl}"
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build --locked -q
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); TLS=$(free_port); ADMIN=$(free_port); APP=$(free_port)

# A CA and a server certificate for "localhost" and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 400 \
    -subj "/CN=channelgate testssl CA" -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$OUT/server.key" -out "$OUT/server.csr" 2>/dev/null
# A CRL URI as public CAs give (testssl rates a certificate without CRL/OCSP as HIGH).
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\ncrlDistributionPoints=URI:http://127.0.0.1/ca.crl\n' > "$OUT/ext.cnf"
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial \
    -days 365 -extfile "$OUT/ext.cnf" -out "$OUT/server.pem" 2>/dev/null

CONF="$OUT/channelgate.toml"
cat > "$CONF" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
pid_file = "$OUT/cg.pid"
upgrade_sock = "$OUT/cg-upgrade.sock"
[admin]
listen = "127.0.0.1:$ADMIN"
[upstream]
servers = ["127.0.0.1:$APP"]
[log]
level = "warn"
access_log = false
[tls]
listen = ["127.0.0.1:$TLS"]
certificates = [{ cert = "$OUT/server.pem", key = "$OUT/server.key" }]
hsts = "max-age=63072000"
redirect_http = true
TOML
mkdir -p "$OUT/www" && echo "hello" > "$OUT/www/index.html"
python3 -m http.server "$APP" --bind 127.0.0.1 --directory "$OUT/www" > "$OUT/app.log" 2>&1 &
APP_PID=$!
target/debug/channelgate run --config "$CONF" > "$OUT/channelgate.log" 2>&1 &
CG=$!
trap 'kill $CG $APP_PID 2>/dev/null || true' EXIT
for _ in $(seq 200); do
    curl -sf --cacert "$OUT/ca.pem" "https://127.0.0.1:$TLS/" >/dev/null && break
    sleep 0.1
done

# --add-ca: the test CA is trusted like a public one, so the certificate checks are real.
timeout 900 testssl --quiet --color 0 --warnings off --add-ca "$OUT/ca.pem" \
    --jsonfile "$OUT/testssl.json" --logfile "$OUT/testssl.log" \
    "https://127.0.0.1:$TLS/" > /dev/null 2>&1 || true
python3 - "$OUT/testssl.json" "$OUT/summary.txt" <<'PY'
import json, sys
try:
    findings = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"testssl: no JSON report ({e}); see the log next to it"); sys.exit(2)
by_id = {f["id"]: f for f in findings}
bad = []
def offered(fid):
    f = by_id.get(fid)
    return f is not None and f["finding"].startswith("offered") and not f["finding"].startswith("offered with")
for proto in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]:
    if by_id.get(proto, {}).get("finding", "not offered") != "not offered":
        bad.append(f"{proto}: {by_id[proto]['finding']}")
for c in ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
          "cipherlist_3DES_IDEA", "cipherlist_OBSOLETED"]:
    f = by_id.get(c)
    if f and f["finding"] != "not offered":
        bad.append(f"{c}: {f['finding']}")
fs = by_id.get("FS") or by_id.get("PFS") or {}
if fs.get("severity") != "OK":
    bad.append(f"forward secrecy: {fs.get('finding', 'missing')}")
ACCEPTED = {"cipher_order", "security_headers"}
accepted = []
for f in findings:
    if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL"):
        line = f"{f['id']} ({f['severity']}): {f['finding']}"
        (accepted if f["id"] in ACCEPTED else bad).append(line)
counts = {}
for f in findings:
    counts[f["severity"]] = counts.get(f["severity"], 0) + 1
def show(fid):
    f = by_id.get(fid)
    return f"{fid}: {f['finding']}" if f else f"{fid}: (not reported)"
lines = [
    "testssl: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
    "  " + "; ".join(show(p) for p in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]),
    "  " + show("PFS") + "; " + show("PFS_ECDHE_curves"),
    "  " + show("ALPN_HTTP2") + "; " + show("HSTS_time"),
    "  vulnerabilities checked: " + ", ".join(sorted(f["id"] for f in findings
        if f["id"] in ("heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego",
                       "secure_client_renego", "CRIME_TLS", "BREACH", "POODLE_SSL",
                       "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST",
                       "LUCKY13", "winshock", "RC4"))),
]
lines += [f"  accepted {a}" for a in accepted]
lines += [f"  FAILED {b}" for b in bad]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if bad else 0)
PY
