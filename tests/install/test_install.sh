#!/usr/bin/env bash
# test_install.sh BUILD_DIR SOURCE_DIR: install raftkv into a temporary
# prefix, build examples/hello.c against it through pkg-config (shared and
# static libclerk), start a 3-node cluster from the installed kvserver, and
# run the example against it.
set -euo pipefail
build=$1 src=$2
# Inside the build directory, which must allow running programs (/tmp may be
# mounted noexec on a CI machine).
work=$(mktemp -d "$build/install-test-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
pc=$(find "$work/prefix" -name raftkv-clerk.pc -print -quit)
[ -n "$pc" ] || { echo "FAIL: raftkv-clerk.pc was not installed"; exit 1; }
libdir=$(dirname "$(dirname "$pc")")
export PKG_CONFIG_PATH=$(dirname "$pc")
for f in "$libdir/libclerk.so" "$libdir/libclerk.a" \
         "$work/prefix/include/clerk/clerk.h" "$work/prefix/bin/kvserver" \
         "$work/prefix/bin/kvctl"; do
    [ -e "$f" ] || { echo "FAIL: $f was not installed"; exit 1; }
done

# Every installed program says which release it is, and so do the headers.
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || { echo "FAIL: no CMAKE_PROJECT_VERSION in $build"; exit 1; }
for prog in "$work/prefix/bin/"*; do
    name=$(basename "$prog")
    out=$("$prog" --version) || { echo "FAIL: $name --version failed"; exit 1; }
    grep -Eqx "$name $version \(git ([0-9a-f]{7,40}(-dirty)?|unknown)\)" <<<"$out" || {
        echo "FAIL: $name --version printed: $out"; exit 1; }
done
printf '#include <stdio.h>\n#include <clerk/clerk.h>\nint main(void) { puts(CLERK_VERSION); return CLERK_VERSION_NUMBER > 0 ? 0 : 1; }\n' \
    >"$work/version.c"
cc -Wall -Werror "$work/version.c" -o "$work/version" $(pkg-config --cflags raftkv-clerk)
[ "$("$work/version")" = "$version" ] || {
    echo "FAIL: clerk.h says CLERK_VERSION $("$work/version"), not $version"; exit 1; }

# Shared and static, with the README's commands as written (README.md,
# "From C"): an rpath for a prefix the loader does not search, and
# pkg-config --static with -static.
cc -Wall -Werror "$src/examples/hello.c" $(pkg-config --cflags --libs raftkv-clerk) \
    -Wl,-rpath,"$(pkg-config --variable=libdir raftkv-clerk)" -o "$work/hello"
# glibc warns that getaddrinfo and dlopen need its shared libraries at run
# time: a warning, not an error.
cc "$src/examples/hello.c" $(pkg-config --static --cflags --libs raftkv-clerk) \
    -static -o "$work/hello-static" 2>"$work/static.log" || {
    cat "$work/static.log"; echo "FAIL: the static link failed"; exit 1; }
if grep -v "statically linked applications requires at runtime" "$work/static.log" |
    grep -q "warning\|error"; then
    cat "$work/static.log"; echo "FAIL: the static link warned"; exit 1
fi
# The README's example line itself must name these commands.
grep -qF 'pkg-config --static --cflags --libs raftkv-clerk) -static' "$src/README.md" ||
    { echo "FAIL: README.md does not show the static link tested here"; exit 1; }
grep -qF 'sudo ldconfig' "$src/README.md" ||
    { echo "FAIL: README.md does not say to run ldconfig"; exit 1; }
# Not `ldd | grep -q`: grep -q exits at the first match, ldd may then die of
# SIGPIPE, and pipefail turns that into a failure.
deps=$(ldd "$work/hello" 2>&1) || true
# The rpath from the .pc may read prefix/lib/pkgconfig/../../lib: compare
# the files, not the spellings.
linked=$(sed -n 's/.*libclerk\.so\.[0-9]* => \(.*\) (0x.*/\1/p' <<<"$deps")
[ -n "$linked" ] && [ "$(readlink -f "$linked")" = "$(readlink -f "$libdir/libclerk.so")" ] || {
    echo "FAIL: hello is not linked to $libdir/libclerk.so; ldd says:"
    echo "$deps"; exit 1; }
deps=$(ldd "$work/hello-static" 2>&1) || true
if grep -q "=>" <<<"$deps"; then
    echo "FAIL: hello-static still needs shared libraries; ldd says:"
    echo "$deps"; exit 1
fi

# Three nodes of the installed kvserver on free ports, with their options
# from the command line alone (not from RAFTKV_SERVER_* of this shell).
for v in $(compgen -e | grep '^RAFTKV_SERVER_' || true); do unset "$v"; done
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
# Ports 20000-25999 are this test's; the C tests take 10000-19999
# (tests/cluster/harness.c), test_cluster_script.sh 26000-31999,
# test_cluster_sh.sh 32000-32999 and test_stalls.sh 33000-33899.
# Each node takes a client port and the next one for its peers.
p=$((20000 + RANDOM % 5900))
while [ ${#ports[@]} -lt 3 ]; do
    in_use "$p" || in_use $((p + 1)) || ports+=("$p")
    p=$((p + 2))
done
cl="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
eps="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
(umask 077 && openssl rand -hex 32 >"$work/peer.secret")
for i in 1 2 3; do
    "$work/prefix/bin/kvserver" --id $i --cluster "$cl" \
        --peer-secret-file "$work/peer.secret" \
        --data-dir "$work/node$i" >"$work/node$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 100); do
    "$work/prefix/bin/kvctl" --cluster "$eps" --timeout 1 status >/dev/null 2>&1 && break
    sleep 0.1
done

expected="hello -> world
cas world -> raftkv: OK
cas world -> again: CAS_MISMATCH"
for prog in hello hello-static; do
    "$work/prefix/bin/kvctl" --cluster "$eps" del hello >/dev/null 2>&1 || true
    out=$(RAFTKV_CLUSTER=$eps "$work/$prog")
    if [ "$out" != "$expected" ]; then
        echo "FAIL: $prog printed:"; echo "$out"; tail -n 5 "$work"/node*.log
        exit 1
    fi
    echo "$prog: ok"
done
echo "1 passed, 0 failed"
