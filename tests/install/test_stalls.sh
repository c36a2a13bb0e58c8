#!/usr/bin/env bash
# test_stalls.sh BUILD_DIR SOURCE_DIR: bench/stalls.sh runs (figures are
# not checked: benchmarks stay out of pass/fail tests). A small lease
# revoke and a small compaction in steps, 3 s of writers each.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d /tmp/raftkv-stalls-test-XXXXXX)
export TMPDIR=$tmp BUILD=$build DURATION=3 AT=1
cleanup() {
    local d
    for d in "$tmp"/raftkv-stalls-*; do
        [ -d "$d" ] && RAFTKV_CLUSTER_DIR=$d "$src/scripts/cluster.sh" wipe >/dev/null 2>&1
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# Ports 33000-33899 are this test's (the others: see test_install.sh);
# each node takes the port and the next one.
busy() { local h; for h in 127.0.0.1 127.0.0.2 127.0.0.3; do
    in_use $h "$1" || in_use $h $(($1 + 1)) && return 0; done; return 1; }
port=$((33000 + 2 * (RANDOM % 440)))
while busy $port; do port=$((port + 2)); done
[ $port -lt 33900 ] || fail "no free port in 33000-33899"
export PORT=$port
st=$src/bench/stalls.sh

rc=0; "$st" nosuch 10 >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "nosuch: exit $rc, wanted 2"

out=$("$st" lease 300 2>&1) || fail "stalls.sh lease: $out"
echo "$out"
grep -q '^lease [0-9a-f]* revoked (300 keys deleted)' <<<"$out" || fail "no revoke of 300 keys"
grep -Eq '^stalls: lease of 300 took [0-9.]+ s' <<<"$out" || fail "no lease timing"
grep -Eq '^op=put conns=1 clients=4 ops=[1-9][0-9]* errors=0 .* max=' <<<"$out" || fail "no kvbench line"
grep -Eq '^stalls: term [0-9]+ -> [0-9]+; [0-9]+ pre-vote' <<<"$out" || fail "no term line"

out=$("$st" compact 600 --compact-step-records 50 2>&1) || fail "stalls.sh compact: $out"
echo "$out"
grep -Eq '^compacted revision [0-9]+' <<<"$out" || fail "no compaction"
grep -Eq '^stalls: compact of 600 took [0-9.]+ s' <<<"$out" || fail "no compact timing"

[ -z "$(ls "$tmp")" ] || fail "stalls.sh left $(ls "$tmp")"
if pgrep -f "$tmp/" >/dev/null; then fail "a process of stalls.sh's cluster still runs"; fi
echo "PASS"
