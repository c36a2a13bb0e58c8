#!/usr/bin/env bash
# test_compare.sh BUILD_DIR SOURCE_DIR: bench/compare.sh runs (figures are
# not checked: benchmarks stay out of pass/fail tests). One short plain put
# and one put over TLS with auth on, raftkv alone, and the option checks.
set -euo pipefail
build=$1 src=$2
export RAFTKV_BUILD_DIR=$build
tmp=$(mktemp -d /tmp/raftkv-compare-test-XXXXXX)
# compare.sh makes its cluster directory under $TMPDIR and wipes it itself;
# this wipes whatever a failed run left.
export TMPDIR=$tmp
cleanup() {
    local d
    for d in "$tmp"/raftkv-compare-*/cluster; do
        [ -d "$d" ] && RAFTKV_CLUSTER_DIR=$d "$src/scripts/cluster.sh" wipe >/dev/null 2>&1
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# Ports 9000-9899 are this test's (the others: see test_install.sh); each
# node takes the port and the next one.
busy() { local h; for h in 127.0.0.1 127.0.0.2 127.0.0.3; do
    in_use $h "$1" || in_use $h $(($1 + 1)) && return 0; done; return 1; }
port=$((9000 + 2 * (RANDOM % 440)))
while busy $port; do port=$((port + 2)); done
[ $port -lt 9900 ] || fail "no free port in 9000-9899"
export RAFTKV_PORT=$port
cmp=$src/bench/compare.sh

# Options: the workload list, refusals before anything starts.
help=$("$cmp" --help) || fail "--help"
for w in put1 put64 get64 put256 range64 txn64 watch1000 lease64 keepalive64 puttls64; do
    grep -q "$w" <<<"$help" || fail "--help does not name $w"
done
grep -q -- "--runs 3" <<<"$help" || fail "--help does not say how to run the full table"
rc=0; "$cmp" --only nosuch >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "--only nosuch: exit $rc, wanted 2"
rc=0; out=$(ETCD_ANCHOR=/nonexistent "$cmp" --only put1 2>&1) || rc=$?
{ [ $rc = 1 ] && grep -q -- "--no-etcd" <<<"$out"; } || fail "no etcd anchor: exit $rc: $out"
rc=0; out=$(REDIS_ANCHOR=/nonexistent "$cmp" --no-etcd --only put64 2>&1) || rc=$?
{ [ $rc = 1 ] && grep -q -- "--no-redis" <<<"$out"; } || fail "no Redis anchor: exit $rc: $out"

# raftkv alone: a result line per workload and the table.
out=$("$cmp" --raftkv-only --only put1,puttls64 --duration 1s 2>&1) || fail "compare.sh: $out"
echo "$out"
grep -Eq '^raftkv put1: op=put conns=1 clients=1 ops=[1-9][0-9]* errors=0 .* rate=[0-9]+ ops/s' \
    <<<"$out" || fail "no put1 result line"
grep -Eq '^raftkv puttls64: op=put conns=64 clients=64 ops=[1-9][0-9]* errors=0 .* rate=[0-9]+ ops/s' \
    <<<"$out" || fail "no puttls64 result line"
grep -Eq '^\| put over TLS, auth on, 64 clients / 64 conns \| [0-9]+ \|' <<<"$out" ||
    fail "no puttls64 row in the table"
ls "$tmp"/raftkv-compare-* >/dev/null 2>&1 && fail "compare.sh left its directory: $(ls "$tmp")"
if pgrep -f "$tmp/" >/dev/null; then fail "a process of compare.sh's cluster still runs"; fi
echo "PASS"
