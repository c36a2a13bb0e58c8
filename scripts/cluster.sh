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
# Environment:
#   RAFTKV_CLUSTER_DIR   data, logs and pid files (default: .cluster in the
#                        repository)
#   RAFTKV_PORT          node i serves clients on 127.0.0.i:PORT and the
#                        other nodes on PORT+1 (default 7001)
#   RAFTKV_BUILD_DIR     where kvserver and kvctl are, built first when
#                        missing (default: build/ in the repository)
#   RAFTKV_SERVER_FLAGS  more kvserver options, split on blanks (e.g.
#                        --enable-fault-injection for kvctl fault/partition)
#   RAFTKV_METRICS_PORT  if set, node i serves http://127.0.0.i:PORT/metrics
#                        and /health
# The nodes ignore RAFTKV_SERVER_* variables of this shell (the environment
# form of kvserver's options): their options are the above. They prove to
# each other that they hold the cluster's secret, DIR/peer.secret, made at
# the first start (mode 600). Building installs what is missing with
# scripts/deps.sh --build (not the test-only packages).
#
# start succeeds only when the processes it started are the ones answering:
# a port already in use (by a kvserver of another directory, or anything
# else) is an error naming the port and, when it can be found, the pid; so
# is a node that dies at start, or nodes that report different clusters.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
dir=${RAFTKV_CLUSTER_DIR:-$root/.cluster}
port=${RAFTKV_PORT:-7001}
bdir=${RAFTKV_BUILD_DIR:-$root/build}
kvserver=$bdir/kvserver/kvserver
kvctl=$bdir/clerk/kvctl

started=() # nodes this run started: a failed start stops them again
die() {
    echo "cluster.sh: $*" >&2
    local i pid
    for i in "${started[@]}"; do
        pid=$(cat "$dir/node$i.pid" 2>/dev/null) || continue
        kill -TERM "$pid" 2>/dev/null && echo "cluster.sh: stopped node $i (pid $pid) again" >&2
        rm -f "$dir/node$i.pid"
    done
    exit 1
}

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

running() { # is node $1 running: its pid alive and a kvserver of this directory?
    local pid
    pid=$(cat "$dir/node$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # A pid file outlives its process; the pid may be another's by now.
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qx -- "$dir/node$1"
}

# Listening sockets, from /proc/net/tcp{,6}: no ss (iproute2) needed.
# shellcheck disable=SC2086 # splits the address at its dots
hexip() { local IFS=.; set -- $1; printf '%02X%02X%02X%02X' "$4" "$3" "$2" "$1"; }
listen_inodes() { # host port: inodes of sockets listening there (or on any)
    local p; p=$(printf '%04X' "$2")
    awk -v a="$(hexip "$1"):$p" -v b="00000000:$p" \
        -v c="00000000000000000000000000000000:$p" \
        '$4 == "0A" && ($2 == a || $2 == b || $2 == c) { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
owner_of() { # host port: "pid N (command)" listening there, if it can be found
    local ino f pid
    for ino in $(listen_inodes "$1" "$2"); do
        f=$(find /proc/[0-9]*/fd -lname "socket:\[$ino\]" -print -quit 2>/dev/null) || true
        if [ -n "$f" ]; then
            pid=${f#/proc/}; pid=${pid%%/*}
            echo "pid $pid ($(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120))"
            return
        fi
    done
}
port_in_use() { # host port
    [ -n "$(listen_inodes "$1" "$2")" ] || (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
owns_port() { # pid host port: is pid the one listening there?
    local ino
    for ino in $(listen_inodes "$2" "$3"); do
        [ -n "$(find "/proc/$1/fd" -lname "socket:\[$ino\]" -print -quit 2>/dev/null)" ] && return 0
    done
    return 1
}
node_ports() { # id: the ports node id listens on
    echo "$port $((port + 1)) ${RAFTKV_METRICS_PORT:-}"
}
check_ports_free_unless_running() { # id
    running "$1" || check_ports_free "$1"
}
check_ports_free() { # id: die naming the port (and its owner) if one is taken
    local i=$1 p who
    for p in $(node_ports "$i"); do
        if port_in_use "127.0.0.$i" "$p"; then
            who=$(owner_of "127.0.0.$i" "$p")
            die "port 127.0.0.$i:$p (node $i) is in use${who:+ by $who}, not by a node of $dir; stop it, or choose another RAFTKV_PORT"
        fi
    done
}

build() {
    scripts/deps.sh --build
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
    check_ports_free "$i"
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
    started+=("$i")
}

mark_log() { # id: remember where the node's log ends, before it starts
    local size=0
    [ -f "$dir/node$1.log" ] && size=$(wc -c <"$dir/node$1.log")
    echo "$size" >"$dir/node$1.logoff"
}

log_since() { # id: the node's log since this script started it
    tail -c +"$(($(cat "$dir/node$1.logoff" 2>/dev/null || echo 0) + 1))" "$dir/node$1.log" 2>/dev/null
}

verify_node() { # id: die unless our process for node id is alive and listening
    local i=$1 t p pid who
    pid=$(cat "$dir/node$i.pid")
    for ((t = 0; t < 100; t++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "cluster.sh: node $i (pid $pid) exited at start; its log:" >&2
            log_since "$i" | tail -n 5 >&2
            for p in $(node_ports "$i"); do
                who=$(owner_of "127.0.0.$i" "$p")
                [ -z "$who" ] || echo "cluster.sh: port 127.0.0.$i:$p is held by $who" >&2
            done
            die "node $i did not start"
        fi
        owns_port "$pid" "127.0.0.$i" "$port" && owns_port "$pid" "127.0.0.$i" "$((port + 1))" && return 0
        sleep 0.1
    done
    who=$(owner_of "127.0.0.$i" "$port")
    die "node $i (pid $pid) does not listen on 127.0.0.$i:$port after 10 s${who:+; $who does}"
}

cluster_id_of() { # id: the cluster id node id reported since it started
    # (nothing yet is no error: under set -e and pipefail a grep that
    # finds nothing would end the script, silently, mid-start)
    log_since "$1" | grep -o 'cluster [0-9a-f]\{16\}' | grep -v ' 0\{16\}$' | tail -n 1 | cut -d' ' -f2 || true
}

verify_cluster() { # n: every node answers as itself, all of one cluster
    local n=$1 i t st
    # shellcheck disable=SC2046
    st=$("$kvctl" $(kvctl_tls) --cluster "$(endpoints "$n")" --timeout 2 -w json status 2>/dev/null) || true
    for ((i = 1; i <= n; i++)); do
        grep -q "\"address\":\"127.0.0.$i:$port\",\"reachable\":true,\"id\":$i," <<<"$st" ||
            die "node $i (127.0.0.$i:$port) does not answer as node $i: $(grep -o "\"address\":\"127.0.0.$i:$port\"[^}]*" <<<"$st" | cut -c1-200)"
    done
    local -a cid
    for ((t = 0; t < 100; t++)); do
        for ((i = 1; i <= n; i++)); do cid[i]=$(cluster_id_of "$i"); done
        for ((i = 1; i <= n; i++)); do [ -n "${cid[i]}" ] || break; done
        [ "$i" -gt "$n" ] && break # every node named its cluster
        sleep 0.1
    done
    for ((i = 1; i <= n; i++)); do
        [ -n "${cid[i]}" ] && [ "${cid[i]}" = "${cid[1]}" ] && continue
        die "the nodes do not report one cluster id (node 1: ${cid[1]:-none}, node $i: ${cid[i]:-none}); see cluster.sh log $i"
    done
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
    for ((i = 1; i <= n; i++)); do check_ports_free_unless_running "$i"; done
    echo "$n" >"$dir/size"
    if [ $want_tls = true ]; then make_certs "$n"; fi
    for ((i = 1; i <= n; i++)); do
        running "$i" || mark_log "$i"
        start_node "$i" "$n"
    done
    for ((i = 1; i <= n; i++)); do verify_node "$i"; done
    if ! wait_leader "$n"; then
        echo "cluster.sh: no leader after 20 s; the logs:" >&2
        for ((i = 1; i <= n; i++)); do tail -n 5 "$dir/node$i.log" >&2; done
        die "no leader"
    fi
    verify_cluster "$n"
    echo "raftkv: $n nodes running (cluster $(cluster_id_of 1)), data and logs in $dir"
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
    running "$i" || mark_log "$i"
    start_node "$i" "$n"
    verify_node "$i"
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
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    ;;
*)
    die "unknown command '$cmd' (cluster.sh help)"
    ;;
esac
