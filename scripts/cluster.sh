#!/usr/bin/env bash
# cluster.sh: a local raftkv cluster on this machine, node i on 127.0.0.i.
#
#   scripts/cluster.sh start [3|5|7] [--tls]
#                                      build if needed, start, wait for a
#                                      leader (--tls: a new CA and node
#                                      certificates in DIR/certs; clients and
#                                      peers talk TLS)
#   scripts/cluster.sh stop            stop every node (SIGTERM)
#   scripts/cluster.sh status          kvctl status of the running cluster
#   scripts/cluster.sh kill ID         kill -9 one node
#   scripts/cluster.sh restart ID      start one node again with its data
#   scripts/cluster.sh log ID [-f]     show (or follow) one node's log
#   scripts/cluster.sh env             print the RAFTKV_CLUSTER line
#   scripts/cluster.sh wipe            stop and delete all data and logs
#
# Data and logs live in $RAFTKV_CLUSTER_DIR (default: .cluster in the
# repository). Every node serves clients on port $RAFTKV_PORT (default 7001)
# of its own loopback address, and the other nodes on the next port (7002).
# The nodes prove to each other that they hold the cluster's secret,
# $RAFTKV_CLUSTER_DIR/peer.secret, made at the first start (mode 600).
# Binaries come from $RAFTKV_BUILD_DIR (default build/, like
# scripts/test.sh), which is built first when needed. More kvserver
# options go in $RAFTKV_SERVER_FLAGS (RAFTKV_SERVER_FLAGS=
# --enable-fault-injection for `kvctl fault` and `kvctl partition`). With
# $RAFTKV_METRICS_PORT set, node i serves http://127.0.0.i:PORT/metrics and
# /health. The nodes ignore RAFTKV_SERVER_* variables of this shell (the
# environment form of kvserver's options): their options are the above.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
dir=${RAFTKV_CLUSTER_DIR:-$root/.cluster}
port=${RAFTKV_PORT:-7001}
bdir=${RAFTKV_BUILD_DIR:-$root/build}
kvserver=$bdir/kvserver/kvserver
kvctl=$bdir/clerk/kvctl

die() { echo "cluster.sh: $*" >&2; exit 1; }

nodes() { cat "$dir/size" 2>/dev/null || echo 0; }

cluster_list() { # ID=HOST:PORT,... for kvserver
    local n=$1 list="" i
    for ((i = 1; i <= n; i++)); do list+="${list:+,}$i=127.0.0.$i:$port"; done
    echo "$list"
}

endpoints() { # HOST:PORT,... for clients
    local n=$1 list="" i
    for ((i = 1; i <= n; i++)); do list+="${list:+,}127.0.0.$i:$port"; done
    echo "$list"
}

running() { # is node $1 running?
    local pid
    pid=$(cat "$dir/node$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

build() {
    scripts/deps.sh
    if [ ! -f "$bdir/CMakeCache.txt" ]; then
        cmake -S . -B "$bdir" >/dev/null
    fi
    cmake --build "$bdir" -j "$(nproc)" --target kvserver kvctl >/dev/null
}

make_secret() { # the shared peer secret, once per cluster directory
    [ -s "$dir/peer.secret" ] && return
    (umask 077 && openssl rand -hex 32 >"$dir/peer.secret.tmp") ||
        die "cannot make $dir/peer.secret (is openssl installed?)"
    mv "$dir/peer.secret.tmp" "$dir/peer.secret"
}

tls_on() { [ -f "$dir/tls" ]; }

make_certs() { # a CA, one certificate per node (naming 127.0.0.i), root's
    local n=$1 i
    [ -f "$dir/certs/ca.crt" ] && return
    scripts/certs.sh ca "$dir/certs"
    for ((i = 1; i <= n; i++)); do
        scripts/certs.sh node "$dir/certs" "node$i" "127.0.0.$i" localhost
    done
    scripts/certs.sh client "$dir/certs" root
    touch "$dir/tls"
}

kvctl_tls() { # kvctl's TLS flags for this cluster
    if tls_on; then echo "--cacert $dir/certs/ca.crt"; fi
}

start_node() { # id, size
    local i=$1 n=$2
    make_secret
    local tls=()
    if tls_on; then
        local c="$dir/certs"
        tls=(--tls-cert "$c/node$i.crt" --tls-key "$c/node$i.key"
             --peer-tls-cert "$c/node$i.crt" --peer-tls-key "$c/node$i.key"
             --peer-tls-ca "$c/ca.crt")
    fi
    running "$i" && { echo "node $i is already running"; return; }
    mkdir -p "$dir/node$i"
    local metrics=()
    if [ -n "${RAFTKV_METRICS_PORT:-}" ]; then
        metrics=(--metrics-addr "127.0.0.$i:$RAFTKV_METRICS_PORT")
    fi
    # $RAFTKV_SERVER_FLAGS: more kvserver options, split on blanks.
    # shellcheck disable=SC2206
    local flags=(${RAFTKV_SERVER_FLAGS:-})
    # The nodes' options are these alone: kvserver would also read
    # RAFTKV_SERVER_* variables (docs/deploy.md) that this shell may have.
    (
        for v in $(compgen -e | grep '^RAFTKV_SERVER_' || true); do unset "$v"; done
        exec nohup "$kvserver" --id "$i" --cluster "$(cluster_list "$n")" \
            --peer-secret-file "$dir/peer.secret" "${tls[@]}" \
            --data-dir "$dir/node$i" "${metrics[@]}" "${flags[@]}"
    ) >>"$dir/node$i.log" 2>&1 &
    echo $! >"$dir/node$i.pid"
}

wait_leader() {
    local n=$1 t
    for ((t = 0; t < 100; t++)); do
        # shellcheck disable=SC2046
        if "$kvctl" $(kvctl_tls) --cluster "$(endpoints "$n")" --timeout 1 status >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

cmd=${1:-help}
case "$cmd" in
start)
    n=3 want_tls=false
    for arg in "${@:2}"; do
        case "$arg" in
        --tls) want_tls=true ;;
        1|3|5|7) n=$arg ;;
        *) die "start takes 1, 3, 5 or 7 nodes and --tls, not $arg" ;;
        esac
    done
    old=$(nodes)
    if [ "$old" != 0 ] && [ "$old" != "$n" ]; then
        die "$dir holds a $old-node cluster; 'cluster.sh wipe' first to start $n nodes"
    fi
    if [ "$old" != 0 ] && { tls_on && [ $want_tls = false ]; } ; then
        want_tls=true # the cluster was made with TLS; it stays so
    fi
    if [ "$old" != 0 ] && ! tls_on && [ $want_tls = true ]; then
        die "$dir holds a cluster without TLS; 'cluster.sh wipe' first to start one with --tls"
    fi
    build
    mkdir -p "$dir"
    echo "$n" >"$dir/size"
    if [ $want_tls = true ]; then make_certs "$n"; fi
    for ((i = 1; i <= n; i++)); do start_node "$i" "$n"; done
    if ! wait_leader "$n"; then
        echo "cluster.sh: no leader after 20 s; the logs:" >&2
        for ((i = 1; i <= n; i++)); do tail -n 5 "$dir/node$i.log" >&2; done
        exit 1
    fi
    echo "raftkv: $n nodes running, data and logs in $dir"
    for ((i = 1; i <= n; i++)); do
        echo "  node $i  clients 127.0.0.$i:$port  peers 127.0.0.$i:$((port + 1))"
    done
    echo "  peers authenticate with the secret in $dir/peer.secret"
    if tls_on; then
        echo "  clients and peers talk TLS; certificates in $dir/certs"
    fi
    echo
    echo "Try:"
    echo "  export RAFTKV_CLUSTER=$(endpoints "$n")"
    if tls_on; then echo "  export RAFTKV_CACERT=$dir/certs/ca.crt"; fi
    rel=${kvctl#"$root"/}
    echo "  $rel put hello world && $rel get hello"
    echo "  $rel -w table status"
    ;;
stop)
    n=$(nodes)
    for ((i = 1; i <= n; i++)); do
        if running "$i"; then
            pid=$(cat "$dir/node$i.pid")
            kill -TERM "$pid"
            for ((t = 0; t < 50; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            echo "node $i stopped"
        fi
        rm -f "$dir/node$i.pid"
    done
    ;;
status)
    n=$(nodes)
    [ "$n" != 0 ] || die "no cluster in $dir (cluster.sh start)"
    # shellcheck disable=SC2046
    exec "$kvctl" $(kvctl_tls) --cluster "$(endpoints "$n")" -w table status
    ;;
kill)
    i=${2:?kill needs a node id}
    running "$i" || die "node $i is not running"
    kill -9 "$(cat "$dir/node$i.pid")"
    rm -f "$dir/node$i.pid"
    echo "node $i killed (kill -9)"
    ;;
restart)
    i=${2:?restart needs a node id}
    n=$(nodes)
    [ "$i" -ge 1 ] && [ "$i" -le "$n" ] || die "no node $i in a $n-node cluster"
    start_node "$i" "$n"
    echo "node $i started"
    ;;
log)
    i=${2:?log needs a node id}
    [ -f "$dir/node$i.log" ] || die "no log for node $i in $dir"
    if [ "${3:-}" = "-f" ]; then exec tail -f "$dir/node$i.log"; fi
    tail -n 50 "$dir/node$i.log"
    ;;
env)
    echo "export RAFTKV_CLUSTER=$(endpoints "$(nodes)")"
    if tls_on; then echo "export RAFTKV_CACERT=$dir/certs/ca.crt"; fi
    ;;
wipe)
    "$0" stop >/dev/null || true
    rm -rf "$dir"
    echo "removed $dir"
    ;;
help|-h|--help)
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    die "unknown command '$cmd' (cluster.sh help)"
    ;;
esac
