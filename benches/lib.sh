# Shared by benches/*/run.sh: logging, process clean-up, the private binary copy, and
# waiting for ports. Source it after setting BENCH (the script's short name).
# shellcheck shell=bash

die() { echo "$BENCH/run.sh: $*" >&2; exit 1; }
log() { printf '[%s %s] %s\n' "$BENCH" "$(date +%H:%M:%S)" "$*" >&2; }
num() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a whole number (got '$2')"; }   # OPTION VALUE

PIDS=()   # processes the script started; stopped last-started first on exit

stop_pid() {  # PID: SIGTERM, then SIGKILL after 10 s
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

tree_pids() {  # PID: the PIDs of its descendants (children, grandchildren, ...)
    ps -e -o pid= -o ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            inside[root] = 1
            for (round = 0; round < 64; round++) {   # depth bound
                grew = 0
                for (p in parent) if (!(p in inside) && (parent[p] in inside)) { inside[p] = 1; grew = 1 }
                if (!grew) break
            }
            for (p in inside) if (p != root) print p
        }'
}

tree_names() {  # PID: the names of its descendants, sorted, on one line
    local k
    for k in $(tree_pids "$1"); do cat "/proc/$k/comm" 2>/dev/null || true; done | sort | tr '\n' ' ' | sed 's/ $//'
}

stop_tree() {  # PID: stop_pid PID, then any descendant it left behind (SIGTERM, SIGKILL after 5 s)
    local pid="$1" kids k i
    kill -0 "$pid" 2>/dev/null || return 0
    kids="$(tree_pids "$pid" 2>/dev/null || true)"
    stop_pid "$pid"
    for k in $kids; do
        kill -0 "$k" 2>/dev/null || continue
        echo "$BENCH/run.sh: stopping $k ($(cat "/proc/$k/comm" 2>/dev/null)), left behind by $pid" >&2
        kill -TERM "$k" 2>/dev/null || true
        for i in $(seq 50); do kill -0 "$k" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$k" 2>/dev/null || true
    done
}

# EXIT trap: stop every started process (and what they started); keep $TMP (with log tails on failure) when
# --keep was given or the run failed, else remove it.
bench_cleanup() {
    local rc=$? i f
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_tree "${PIDS[$i]}"; done
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "$BENCH/run.sh: kept $TMP" >&2
        if [ "$rc" != 0 ]; then
            for f in "$TMP"/*.log "$TMP"/*.err "$TMP"/*/*.log; do
                [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
            done
        fi
    else
        rm -rf "$TMP"
    fi
}

# Runs a private copy of $BIN: a concurrent `cargo build` may replace
# target/release/channelgate while the benchmark runs.
use_private_binary() {
    mkdir -p "$TMP/bin"
    cp -p "$BIN" "$TMP/bin/channelgate"
    BIN="$TMP/bin/channelgate"
}

bench_setup() {  # MODULE...: PY, BIN and LOAD ready (the venv with MODULEs for daphne only)
    # The repo's venv (scripts/setup) is needed for daphne only; the helpers need nothing
    # but the standard library.
    if [[ ",$TARGETS," == *,daphne,* ]]; then
        [ -x "$PY" ] || "$REPO/scripts/setup"
        local imports; imports="$(IFS=,; echo "$*")"
        "$PY" -c "import ${imports//,/, }" 2>/dev/null || "$REPO/scripts/setup"
    elif [ ! -x "$PY" ]; then
        PY="$(command -v python3)" || die "python3 is needed"
    fi
    if [ -n "${CHANNELGATE_BIN:-}" ]; then
        [ -x "$BIN" ] || die "CHANNELGATE_BIN=$BIN is not an executable"
    elif [ "$BUILD" = 1 ] || [ ! -x "$BIN" ]; then
        log "cargo build --release (channelgate)"
        (cd "$REPO" && timeout 1800 cargo build --release --bin channelgate) >&2 || die "channelgate build failed"
    fi
    if [ "$BUILD" = 1 ] || [ ! -x "$LOAD" ]; then
        log "cargo build --release (benches/load: cg-load)"
        (cd "$REPO/benches/load" && timeout 1800 cargo build --release) >&2 || die "cg-load build failed"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # PORT SECONDS PID: until the port accepts, the process dies, or time is up
    local i
    for i in $(seq $(($2 * 10))); do
        port_open "$1" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Installs Debian packages (root only; apt-get update and a second try when the first
# fails), output to /tmp/cg-$BENCH-apt.log. Fails when it could not.
apt_install() {  # PACKAGE...
    [ "$(id -u)" = 0 ] || return 1
    {
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" \
            || { DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq \
                 && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"; }
    } >"/tmp/cg-$BENCH-apt.log" 2>&1
}

# nginx + nchan (Debian libnginx-mod-nchan), installed when missing; fails when unavailable.
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
NGINX=/usr/sbin/nginx
nchan_ok() { [ -f "$NCHAN_MODULE" ] && [ -x "$NGINX" ]; }
ensure_nchan() {
    nchan_ok && return 0
    log "installing libnginx-mod-nchan (Debian) for the nchan target"
    apt_install libnginx-mod-nchan || true
    nchan_ok
}

# Pushpin (Debian pushpin 1.36 with condure and zurl), installed when missing; fails when
# unavailable. Only its binaries and its config template are used: the scripts never
# start the system service.
PUSHPIN=/usr/bin/pushpin
pushpin_template() {
    PUSHPIN_TEMPLATE=/etc/pushpin/pushpin.conf
    [ -f "$PUSHPIN_TEMPLATE" ] || PUSHPIN_TEMPLATE=/usr/share/pushpin/pushpin.conf.condure
}
pushpin_template
pushpin_ok() {
    pushpin_template
    [ -x "$PUSHPIN" ] && [ -f "$PUSHPIN_TEMPLATE" ] && command -v condure >/dev/null && command -v zurl >/dev/null
}
ensure_pushpin() {
    pushpin_ok && return 0
    log "installing pushpin (Debian) for the pushpin target"
    apt_install pushpin || true
    pushpin_ok
}

# make_pki DIR: an ECDSA P-256 server certificate for 127.0.0.1 / localhost signed by a CA
# made for this run: DIR/ca.pem (the clients' --ca-file), DIR/cert.pem, DIR/key.pem.
# rustls/webpki refuses a self-signed CA:TRUE certificate as the server's own, hence the CA.
make_pki() {
    local dir="$1"
    command -v openssl >/dev/null 2>&1 || die "openssl is needed for the -tls targets"
    mkdir -p "$dir"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$dir/ext.cnf"
    { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$BENCH bench CA" \
          -keyout "$dir/ca.key" -out "$dir/ca.pem" \
      && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
          -keyout "$dir/key.pem" -out "$dir/req.csr" \
      && openssl x509 -req -in "$dir/req.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
          -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/cert.pem"; } \
        >"$dir/openssl.log" 2>&1 || die "openssl could not make the certificate (see $dir/openssl.log)"
    chmod 644 "$dir/key.pem"
}

nginx_common() {   # nginx_common DIR: temp paths inside DIR, no access log (inside `http {}`)
    cat <<CONF
    access_log off;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path       $1/tmp/proxy;
    fastcgi_temp_path     $1/tmp/fastcgi;
    uwsgi_temp_path       $1/tmp/uwsgi;
    scgi_temp_path        $1/tmp/scgi;
CONF
}

# nginx_proxy_conf DIR UPSTREAM_PORT LISTEN: writes DIR/nginx.conf, nginx as the reverse proxy
# beside channelgate: 2 workers (= channelgate threads), upstream keepalive, no logging, and
# the same headers channelgate adds, so both proxies do the same work. LISTEN: the server
# block's listen (and ssl_*) lines.
nginx_proxy_conf() {
    local dir="$1" up="$2" listen="$3"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
$(nginx_common "$dir")
    # Both close a client connection after 1000 requests by default (nginx
    # keepalive_requests, channelgate [server] keepalive_requests); lift it in both.
    keepalive_requests 10000000;
    upstream app {
        server 127.0.0.1:$up;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
$listen
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id;
        }
    }
}
CONF
}
