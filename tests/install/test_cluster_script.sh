#!/usr/bin/env bash
# test_cluster_script.sh BUILD_DIR SOURCE_DIR: the local cluster launcher as
# a user runs it: start, write, kill the leader, status, restart, stop, wipe.
set -euo pipefail
build=$1 src=$2
export RAFTKV_BUILD_DIR=$build
export RAFTKV_CLUSTER_DIR=$(mktemp -d /tmp/raftkv-cluster-XXXXXX)
in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# Ports 26000-31999 are this test's (see test_install.sh).
port=$((26000 + RANDOM % 5900))
# Each node takes the port and the next one (its peer port).
busy() { local h; for h in 127.0.0.1 127.0.0.2 127.0.0.3; do
    in_use $h "$1" || in_use $h $(($1 + 1)) && return 0; done; return 1; }
while busy $port; do
    port=$((port + 1))
done
export RAFTKV_PORT=$port
# The environment form of kvserver's options, as an operator's shell may
# have it: cluster.sh's nodes must not take these (a node given them would
# refuse to start: no such file, not a number).
export RAFTKV_SERVER_CONFIG=/nonexistent/kvserver.conf
export RAFTKV_SERVER_ELECTION_MS=not-a-number RAFTKV_SERVER_DATA_DIR=/nonexistent
cs=$src/scripts/cluster.sh
kvctl=$build/clerk/kvctl
trap '"$cs" wipe >/dev/null 2>&1 || true' EXIT
fail() { echo "FAIL: $*"; "$cs" log 1 || true; exit 1; }

out=$("$cs" start) || fail "start"
[ "$(stat -c %a "$RAFTKV_CLUSTER_DIR/peer.secret")" = 600 ] ||
    fail "the peer secret is readable by others"
grep -q "127.0.0.3:$port" <<<"$out" || fail "start did not print the endpoints"
eval "$("$cs" env)"
[ "$RAFTKV_CLUSTER" = "127.0.0.1:$port,127.0.0.2:$port,127.0.0.3:$port" ] || fail "env"
"$kvctl" put k v >/dev/null || fail "put"
[ "$("$kvctl" get k)" = v ] || fail "get"
# kvbench runs against it and prints its result line (figures: bench/).
bench=$("$build/bench/kvbench" --cluster "$RAFTKV_CLUSTER" --op put \
    --clients 4 --conns 2 --duration 1s) || fail "kvbench"
grep -Eq '^op=put conns=2 clients=4 ops=[1-9][0-9]* errors=0 .* rate=[0-9]+ ops/s' \
    <<<"$bench" || fail "kvbench printed: $bench"
# The data model's workloads (a small key space keeps the fill short).
bench=$("$build/bench/kvbench" --cluster "$RAFTKV_CLUSTER" --op range \
    --key-space 200 --range-keys 100 --clients 2 --conns 1 --duration 0.5s) ||
    fail "kvbench --op range: $bench"
grep -Eq '^op=range .* errors=0 .* range_keys=100 short=0$' <<<"$bench" ||
    fail "kvbench printed: $bench"
bench=$("$build/bench/kvbench" --cluster "$RAFTKV_CLUSTER" --op txn \
    --key-space 200 --clients 2 --conns 1 --duration 0.5s) ||
    fail "kvbench --op txn: $bench"
grep -Eq '^op=txn .* errors=0 .* compare=version succeeded=[1-9][0-9]* success=1.000$' \
    <<<"$bench" || fail "kvbench printed: $bench"
bench=$("$build/bench/kvbench" --cluster "$RAFTKV_CLUSTER" --op rtxn \
    --key-space 200 --clients 2 --conns 1 --duration 0.5s) ||
    fail "kvbench --op rtxn: $bench"
grep -Eq '^op=rtxn conns=1 clients=2 ops=[1-9][0-9]* errors=0 ' <<<"$bench" ||
    fail "kvbench printed: $bench"
bench=$("$build/bench/kvbench" --cluster "$RAFTKV_CLUSTER" --op watch \
    --watchers 6 --clients 2 --conns 2 --duration 0.5s) ||
    fail "kvbench --op watch: $bench"
grep -Eq '^op=watch conns=2 clients=2 watchers=6 puts=[1-9][0-9]* ops=[1-9][0-9]* errors=0 ' \
    <<<"$bench" || fail "kvbench printed: $bench"
bench=$("$build/bench/kvbench" --cluster "$RAFTKV_CLUSTER" --op keepalive \
    --leases 20 --clients 2 --conns 1 --duration 0.5s) ||
    fail "kvbench --op keepalive: $bench"
grep -Eq '^op=keepalive conns=1 clients=2 ops=[1-9][0-9]* errors=0 ' \
    <<<"$bench" || fail "kvbench printed: $bench"
st=$("$kvctl" -w json status) || fail "status"
leader=$(grep -o '"id":[0-9]*,"role":"leader"' <<<"$st" | grep -o '[0-9]\+' | sed -n 1p)
[ -n "$leader" ] || fail "no leader in status"
"$cs" kill "$leader" >/dev/null || fail "kill"
"$kvctl" --timeout 10 put k v2 >/dev/null || fail "put after killing the leader"
"$cs" status >/dev/null || fail "status with one node down"
"$cs" restart "$leader" >/dev/null || fail "restart"
logtext=$("$cs" log "$leader") || fail "log"
grep -q "restored" <<<"$logtext" || fail "log"
[ "$("$kvctl" get k)" = v2 ] || fail "get after restart"
"$cs" stop >/dev/null || fail "stop"
if "$kvctl" --timeout 0.5 get k >/dev/null 2>&1; then fail "still serving after stop"; fi
"$cs" start >/dev/null || fail "start again"
[ "$("$kvctl" get k)" = v2 ] || fail "data lost across stop and start"
"$cs" wipe >/dev/null
[ ! -d "$RAFTKV_CLUSTER_DIR" ] || fail "wipe left $RAFTKV_CLUSTER_DIR"

# The same with TLS: clients need the CA; plaintext gets nothing.
out=$("$cs" start --tls) || fail "start --tls"
grep -q "RAFTKV_CACERT" <<<"$out" || fail "start --tls did not print RAFTKV_CACERT"
eval "$("$cs" env)"
[ -f "${RAFTKV_CACERT:-}" ] || fail "env did not name the CA"
"$kvctl" put t secure >/dev/null || fail "put over TLS"
[ "$("$kvctl" get t)" = secure ] || fail "get over TLS"
if RAFTKV_CACERT= "$kvctl" --timeout 1 get t >/dev/null 2>&1; then
    fail "a plaintext client was served by a TLS cluster"
fi
"$cs" status >/dev/null || fail "status over TLS"
"$cs" stop >/dev/null || fail "stop (TLS)"
"$cs" start >/dev/null || fail "start again (stays TLS)"
[ "$("$kvctl" get t)" = secure ] || fail "get after restarting the TLS cluster"
unset RAFTKV_CACERT
"$cs" wipe >/dev/null
echo "1 passed, 0 failed"
