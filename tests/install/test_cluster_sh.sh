#!/usr/bin/env bash
# test_cluster_sh.sh BUILD_DIR SOURCE_DIR: scripts/cluster.sh reports
# success only when its own processes answer: --help names every
# variable; a port held by another process (a kvserver of another
# directory, or a node of another cluster.sh directory) makes start fail
# naming the port and the pid, and leaves that process alone; start, stop
# and start again on free ports.
set -euo pipefail
build=$1 src=$2
cs=$src/scripts/cluster.sh
export RAFTKV_BUILD_DIR=$build
work=$(mktemp -d /tmp/raftkv-test-cluster-sh-XXXXXX)
foreign=()
cleanup() {
    RAFTKV_CLUSTER_DIR=$work/a "$cs" stop >/dev/null 2>&1 || true
    RAFTKV_CLUSTER_DIR=$work/b "$cs" stop >/dev/null 2>&1 || true
    for p in "${foreign[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${foreign[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
for v in $(compgen -e | grep '^RAFTKV_SERVER_' || true); do unset "$v"; done
unset RAFTKV_METRICS_PORT RAFTKV_SERVER_FLAGS

# --help lists every variable it reads.
help=$("$cs" --help)
for v in RAFTKV_CLUSTER_DIR RAFTKV_PORT RAFTKV_BUILD_DIR RAFTKV_SERVER_FLAGS \
         RAFTKV_METRICS_PORT; do
    grep -q "$v" <<<"$help" || fail "--help does not name $v"
done
# ... and every variable the script reads is in --help.
for v in $(grep -o 'RAFTKV_[A-Z_]*' "$cs" | sort -u); do
    case $v in RAFTKV_SERVER_|RAFTKV_CLUSTER|RAFTKV_CACERT) continue ;; esac
    grep -q "$v" <<<"$help" || fail "cluster.sh reads $v but --help does not name it"
done

# Ports 32000-32999 are this test's (see test_install.sh); each node
# takes the port and the next one.
in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
busy() { local h; for h in 127.0.0.1 127.0.0.2 127.0.0.3; do
    in_use $h "$1" || in_use $h $(($1 + 1)) && return 0; done; return 1; }
port=$((32000 + RANDOM % 900))
while busy $port; do port=$((port + 2)); done
export RAFTKV_PORT=$port

# A foreign kvserver (its own directory, not cluster.sh's) on node 2's
# client port: start fails, naming the port and the pid, and leaves it be.
openssl rand -hex 32 >"$work/secret"
"$build/kvserver/kvserver" --id 2 --cluster "2=127.0.0.2:$port" \
    --peer-secret-file "$work/secret" --data-dir "$work/foreign" \
    >"$work/foreign.log" 2>&1 &
foreign+=($!)
for _ in $(seq 100); do in_use 127.0.0.2 "$port" && break; sleep 0.1; done
in_use 127.0.0.2 "$port" || fail "the foreign kvserver did not listen"
if out=$(RAFTKV_CLUSTER_DIR=$work/a "$cs" start 2>&1); then
    fail "start succeeded with a foreign kvserver on 127.0.0.2:$port: $out"
fi
grep -q "127.0.0.2:$port" <<<"$out" || fail "start's error does not name the port: $out"
grep -q "pid ${foreign[0]}" <<<"$out" || fail "start's error does not name pid ${foreign[0]}: $out"
kill -0 "${foreign[0]}" || fail "start killed the foreign kvserver"
for h in 127.0.0.1 127.0.0.3; do
    if in_use $h "$port"; then fail "a node of the failed start still listens on $h:$port"; fi
done
kill "${foreign[0]}"; wait "${foreign[0]}" 2>/dev/null || true; foreign=()

# Start, stop, start again.
RAFTKV_CLUSTER_DIR=$work/a "$cs" start >"$work/start.out" 2>&1 ||
    fail "start: $(cat "$work/start.out")"
grep -q "cluster [0-9a-f]\{16\}" "$work/start.out" || fail "start did not name the cluster id"
"$build/clerk/kvctl" --cluster "127.0.0.1:$port" put k v >/dev/null || fail "put"

# A node of another cluster.sh directory (a stale cluster) on the port.
if out=$(RAFTKV_CLUSTER_DIR=$work/b "$cs" start 2>&1); then
    fail "a second directory's start succeeded on ports in use: $out"
fi
pid1=$(cat "$work/a/node1.pid")
grep -q "127.0.0.1:$port" <<<"$out" && grep -q "pid $pid1" <<<"$out" ||
    fail "the second start's error does not name 127.0.0.1:$port and pid $pid1: $out"
[ "$("$build/clerk/kvctl" --cluster "127.0.0.1:$port" get k)" = v ] ||
    fail "the first cluster stopped serving"

RAFTKV_CLUSTER_DIR=$work/a "$cs" stop >/dev/null || fail "stop"
for h in 127.0.0.1 127.0.0.2 127.0.0.3; do
    if in_use $h "$port"; then fail "$h:$port still in use after stop"; fi
done
RAFTKV_CLUSTER_DIR=$work/a "$cs" start >/dev/null 2>&1 || fail "start again"
[ "$("$build/clerk/kvctl" --cluster "127.0.0.1:$port" get k)" = v ] ||
    fail "data lost across stop and start"
RAFTKV_CLUSTER_DIR=$work/a "$cs" stop >/dev/null || fail "stop again"
echo "1 passed, 0 failed"
