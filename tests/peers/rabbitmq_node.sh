#!/usr/bin/env bash
# Dedicated RabbitMQ nodes for outage and cluster tests, from the same install as the
# shared node on 127.0.0.1:5672 but with their own node name, ports, data directory and
# Erlang cookie, so that stopping or killing them never touches the shared node.
#
#   rabbitmq_node.sh start DIR PORT      start node cgtest<PORT>@localhost on 127.0.0.1:PORT
#                                        (distribution port PORT+10000), data in DIR; waits
#                                        until it accepts AMQP connections
#   rabbitmq_node.sh join DIR PORT SEED  make the node (already started) join SEED's cluster
#                                        (SEED is the other node's AMQP port, same DIR)
#   rabbitmq_node.sh ctl DIR PORT ARGS   rabbitmqctl ARGS against that node (stop_app, ...)
#   rabbitmq_node.sh pid DIR PORT        the node's OS pid (for kill -9)
#   rabbitmq_node.sh stop DIR PORT       stop the node (kill -9 if it does not stop)
#
# All nodes started under one DIR share that DIR's Erlang cookie (needed to cluster). No
# plugins are enabled (no management listener to collide on). Never pass 5672.
set -euo pipefail

die() { printf 'rabbitmq_node: %s\n' "$*" >&2; exit 1; }

[ $# -ge 3 ] || die "usage: $0 start|join|ctl|pid|stop DIR PORT [...]"
cmd=$1 dir=$2 port=$3
shift 3
[ "$port" != 5672 ] || die "refusing to touch the shared node on 5672"
case "$port" in ''|*[!0-9]*) die "PORT must be a number, not '$port'";; esac

export PATH="/usr/lib/rabbitmq/bin:/usr/sbin:$PATH"
command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server is not installed (scripts/setup installs it)"

node="cgtest$port@localhost"
base="$dir/rabbitmq-$port"
mkdir -p "$base"
# The cookie is shared by every node of DIR (a cluster), private to the tests.
if [ ! -s "$dir/.erlang.cookie" ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie"
fi
chmod 400 "$dir/.erlang.cookie"
touch "$base/empty.conf"
export HOME="$dir"
export RABBITMQ_NODENAME="$node"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$port"
export RABBITMQ_DIST_PORT=$((port + 10000))
export RABBITMQ_MNESIA_BASE="$base/mnesia"
export RABBITMQ_LOG_BASE="$base/log"
export RABBITMQ_PID_FILE="$base/pid"
export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
export RABBITMQ_CONF_ENV_FILE="$base/empty.conf"
export RABBITMQ_CONFIG_FILE="$base/rabbitmq"
export RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
[ -f "$RABBITMQ_ENABLED_PLUGINS_FILE" ] || echo '[].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
[ -f "$RABBITMQ_CONFIG_FILE.conf" ] || printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users = none\n' "$port" >"$RABBITMQ_CONFIG_FILE.conf"

ctl() { rabbitmqctl -n "$node" "$@"; }

accepting() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

case "$cmd" in
start)
    if accepting; then die "something already listens on 127.0.0.1:$port"; fi
    rabbitmq-server -detached >"$base/start.log" 2>&1 || { cat "$base/start.log" >&2; die "rabbitmq-server failed"; }
    for _ in $(seq 1 600); do
        if accepting; then exit 0; fi
        sleep 0.1
    done
    tail -n 30 "$base/log/"*.log >&2 2>/dev/null || true
    die "node $node did not accept connections on $port within 60 s"
    ;;
join)
    [ $# -eq 1 ] || die "join needs the seed node's port"
    ctl stop_app >/dev/null
    ctl join_cluster "cgtest$1@localhost" >/dev/null
    ctl start_app >/dev/null
    ;;
ctl)
    ctl "$@"
    ;;
pid)
    cat "$RABBITMQ_PID_FILE"
    ;;
stop)
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
    timeout 30 rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # The pid file names this node's own beam process; never a name-based kill.
        kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
*)
    die "unknown command '$cmd'"
    ;;
esac
