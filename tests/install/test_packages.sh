#!/usr/bin/env bash
# test_packages.sh BUILD_DIR SOURCE_DIR: the Debian packages, as `cpack -G
# DEB` makes them from BUILD_DIR (cmake/packaging.cmake): their files,
# control fields, maintainer scripts and dependencies (dpkg-deb), the
# programs in them, the systemd unit (systemd-analyze verify and security)
# and the example config; lintian when it is installed (not a skip
# otherwise: scripts/deps.sh --packaging installs it).
#
# RAFTKV_PACKAGE_TEST=full (root, network, debootstrap; a few minutes,
# not in the normal run) also installs the packages with apt on a clean
# Debian made by debootstrap, runs a three-node cluster of the installed
# kvserver as the user raftkv from configs made from the installed
# example, does a put and a get with the installed kvctl, builds
# examples/hello.c against the installed libclerk-dev, stops the nodes
# with SIGTERM, and removes and purges the packages.
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
mode=${RAFTKV_PACKAGE_TEST:-quick}
case "$mode" in quick|full) ;; *)
    echo "FAIL: RAFTKV_PACKAGE_TEST is quick or full, not $mode"; exit 1 ;;
esac
fail() { echo "FAIL: $*"; exit 1; }
# Inside the build directory: it allows running programs, /tmp may not.
work=$(mktemp -d "$build/package-test-XXXXXX")
root=$work/debian
cleanup() {
    # No process of this test may outlive it in the root (a scenario cut
    # short): those whose root directory is ours, by their pid.
    local r pid
    for r in /proc/[0-9]*/root; do
        [ "$(readlink "$r" 2>/dev/null)" = "$root" ] || continue
        pid=${r#/proc/}
        kill -9 "${pid%/root}" 2>/dev/null || true
    done
    # Nothing may stay mounted in the root before it is deleted.
    if [ -d "$root/proc" ] && mountpoint -q "$root/proc"; then
        umount -l "$root/proc" || true
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$build/CMakeCache.txt")
arch=$(dpkg --print-architecture)
[ -n "$version" ] || fail "no CMAKE_PROJECT_VERSION in $build/CMakeCache.txt"
deb_version=$version-1
(cd "$build" && cpack --config CPackConfig.cmake -G DEB -B "$work" >"$work/cpack.log" 2>&1) ||
    { cat "$work/cpack.log"; fail "cpack -G DEB"; }
server=$work/raftkv-server_${deb_version}_$arch.deb
lib=$work/libclerk0_${deb_version}_$arch.deb
dev=$work/libclerk-dev_${deb_version}_$arch.deb
for d in "$server" "$lib" "$dev"; do
    [ -f "$d" ] || { ls "$work"; fail "cpack did not make $(basename "$d")"; }
done

# ---------------------------------------------------------------- contents
# The files of a package, as "MODE OWNER PATH[ -> TARGET]", sorted.
files() {
    dpkg-deb -c "$1" | awk '$1 !~ /^d/ {
        path = $6; sub(/^\./, "", path)
        line = $1 " " $2 " " path
        if ($7 == "->") line = line " -> " $8
        print line }' | sort
}
expect_files() { # deb, expected lines
    local got
    got=$(files "$1")
    if [ "$got" != "$(sort <<<"$2")" ]; then
        echo "--- expected"; sort <<<"$2"; echo "--- in $(basename "$1")"; echo "$got"
        fail "$(basename "$1") does not hold the expected files"
    fi
}
so=libclerk.so.$version
expect_files "$server" "-rwxr-xr-x root/root /usr/bin/kvserver
-rwxr-xr-x root/root /usr/bin/kvctl
-rwxr-xr-x root/root /usr/bin/kvbench
-rw-r--r-- root/root /lib/systemd/system/raftkv.service
-rw-r--r-- root/root /etc/raftkv/kvserver.conf
-rw-r--r-- root/root /usr/share/doc/raftkv-server/copyright
-rw-r--r-- root/root /usr/share/doc/raftkv-server/changelog.Debian.gz
-rw-r--r-- root/root /usr/share/doc/raftkv-server/deploy.md
-rw-r--r-- root/root /usr/share/doc/raftkv-server/kvserver.md
-rw-r--r-- root/root /usr/share/doc/raftkv-server/security.md"
expect_files "$lib" "-rw-r--r-- root/root /usr/lib/$so
lrwxrwxrwx root/root /usr/lib/libclerk.so.0 -> $so
-rw-r--r-- root/root /usr/share/doc/libclerk0/copyright
-rw-r--r-- root/root /usr/share/doc/libclerk0/changelog.Debian.gz"
expect_files "$dev" "-rw-r--r-- root/root /usr/include/clerk/clerk.h
-rw-r--r-- root/root /usr/include/clerk/clerk_version.h
-rw-r--r-- root/root /usr/lib/libclerk.a
lrwxrwxrwx root/root /usr/lib/libclerk.so -> libclerk.so.0
-rw-r--r-- root/root /usr/lib/pkgconfig/raftkv-clerk.pc
-rw-r--r-- root/root /usr/share/doc/libclerk-dev/copyright
-rw-r--r-- root/root /usr/share/doc/libclerk-dev/changelog.Debian.gz"

# ---------------------------------------------------------------- control
field() { dpkg-deb -f "$1" "$2"; }
for d in "$server" "$lib" "$dev"; do
    [ "$(field "$d" Version)" = "$deb_version" ] || fail "$(basename "$d"): Version"
    [ "$(field "$d" Architecture)" = "$arch" ] || fail "$(basename "$d"): Architecture"
    [ -n "$(field "$d" Maintainer)" ] || fail "$(basename "$d"): no Maintainer"
    [ -n "$(field "$d" Description)" ] || fail "$(basename "$d"): no Description"
done
[ "$(field "$server" Package)" = raftkv-server ] || fail "server package name"
[ "$(field "$lib" Package)" = libclerk0 ] || fail "library package name"
[ "$(field "$dev" Package)" = libclerk-dev ] || fail "dev package name"
depends_on() { # deb, package names it must depend on
    local deb=$1 deps p
    shift
    deps=$(field "$deb" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//')
    for p in "$@"; do
        grep -qx "$p" <<<"$deps" ||
            fail "$(basename "$deb") does not depend on $p; Depends: $(field "$deb" Depends)"
    done
}
# What kvserver, kvctl and kvbench link (dpkg-shlibdeps), and adduser.
depends_on "$server" adduser libc6 libyaml-0-2 liblmdb0 libsodium23 \
    libprotobuf-c1 libssl3 libevent-core-2.1-7 libevent-openssl-2.1-7 libjansson4
depends_on "$lib" libc6 libprotobuf-c1 libssl3 libevent-core-2.1-7
depends_on "$dev" libclerk0 libprotobuf-c-dev libevent-dev libssl-dev
field "$dev" Depends | grep -qF "libclerk0 (= $deb_version)" ||
    fail "libclerk-dev must depend on exactly its libclerk0"
if field "$server" Depends | grep -q libclerk; then
    fail "raftkv-server depends on libclerk (its programs link it statically)"
fi
control() { dpkg-deb --ctrl-tarfile "$1" | tar -xO "./$2" 2>/dev/null; }
[ "$(control "$server" conffiles)" = /etc/raftkv/kvserver.conf ] ||
    fail "kvserver.conf is not a conffile"
control "$server" postinst | grep -q 'adduser --system' ||
    fail "postinst does not make the user raftkv"
control "$server" postinst | grep -q 'chmod 0700 /var/lib/raftkv' ||
    fail "postinst does not make /var/lib/raftkv mode 0700"
control "$lib" shlibs | grep -qx "libclerk 0 libclerk0 (>= $deb_version)" ||
    fail "libclerk0's shlibs: $(control "$lib" shlibs)"
control "$lib" triggers | grep -qx 'activate-noawait ldconfig' ||
    fail "libclerk0 does not trigger ldconfig"
for s in postinst prerm postrm; do
    control "$server" $s | sh -n || fail "$s does not parse"
done

# ---------------------------------------------------------- what is inside
x=$work/x
for d in "$server" "$lib" "$dev"; do dpkg-deb -x "$d" "$x"; done
for p in kvserver kvctl kvbench; do
    out=$("$x/usr/bin/$p" --version) || fail "$p --version"
    grep -Eqx "$p $version \\(git ([0-9a-f]{7,40}(-dirty)?|unknown)\\)" <<<"$out" ||
        fail "$p --version printed: $out"
    file -L "$x/usr/bin/$p" | grep -q ', stripped' || fail "$p is not stripped"
done
# The shared library exports the clerk API and nothing else.
syms=$(nm -D --defined-only "$x/usr/lib/$so" | awk '$2 ~ /^[TDBR]$/ {print $3}')
[ -n "$syms" ] || fail "libclerk exports nothing"
if grep -v '^clerk_' <<<"$syms" | grep -v '^CLERK_' | grep -q .; then
    fail "libclerk exports more than clerk_*: $(grep -v '^clerk_' <<<"$syms" | head -3)"
fi
grep -q "CLERK_VERSION *\"$version\"" "$x/usr/include/clerk/clerk_version.h" ||
    fail "clerk_version.h does not say $version"

# The example config: its required settings are left to the operator, and
# with its commented settings taken in, kvserver accepts it.
conf=$x/etc/raftkv/kvserver.conf
set +e
out=$("$x/usr/bin/kvserver" --config "$conf" --print-config 2>&1)
st=$?
set -e
[ $st = 2 ] && grep -q -- '--id is required' <<<"$out" ||
    fail "the shipped config should leave id to the operator (status $st): $out"
sed -E 's/^#([a-z][a-z-]*:|  - )/\1/' "$conf" >"$work/all.conf"
out=$("$x/usr/bin/kvserver" --config "$work/all.conf" --print-config 2>&1) ||
    fail "the example config with every setting taken in is refused: $out"
grep -q '^data-dir: /var/lib/raftkv ' <<<"$out" || fail "data-dir of the example"

# docs/deploy.md names every option that kvserver --help lists.
for name in $("$x/usr/bin/kvserver" --help | sed -nE 's/^  (-h, )?--([a-z-]+).*/\2/p'); do
    grep -qF -e "\`$name\`" -e "\`--$name" "$src/docs/deploy.md" ||
        fail "docs/deploy.md does not describe kvserver's option --$name"
done

# The unit: hardened as docs/deploy.md says, and valid to systemd.
unit=$x/lib/systemd/system/raftkv.service
for line in 'User=raftkv' 'Group=raftkv' \
    'ExecStart=/usr/bin/kvserver --config /etc/raftkv/kvserver.conf' \
    'ReadWritePaths=/var/lib/raftkv' 'NoNewPrivileges=yes' \
    'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'PrivateDevices=yes' 'CapabilityBoundingSet=' 'Restart=on-failure' \
    'RestartPreventExitStatus=2' 'KillSignal=SIGTERM' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX'; do
    grep -qx -- "$line" "$unit" || fail "raftkv.service lacks $line"
done
grep -Eqx 'LimitNOFILE=[0-9]+' "$unit" || fail "raftkv.service lacks LimitNOFILE"
grep -Eqx 'TimeoutStopSec=[0-9]+' "$unit" || fail "raftkv.service lacks TimeoutStopSec"
if command -v systemd-analyze >/dev/null; then
    # verify wants ExecStart's program to exist: the extracted one.
    sed "s|/usr/bin/kvserver|$x/usr/bin/kvserver|" "$unit" >"$work/raftkv.service"
    out=$(systemd-analyze verify "$work/raftkv.service" 2>&1) ||
        fail "systemd-analyze verify raftkv.service: $out"
    [ -z "$out" ] || fail "systemd-analyze verify raftkv.service says: $out"
    # Exposure 2.0 or less ("OK"); the unit is at 1.4.
    out=$(systemd-analyze security --offline=true --threshold=20 "$unit" 2>&1) ||
        fail "raftkv.service is exposed more than 2.0: $(tail -1 <<<"$out")"
    echo "systemd-analyze: $(tail -1 <<<"$out")"
elif [ "${RAFTKV_REQUIRE_ALL:-0}" = 1 ]; then
    fail "RAFTKV_REQUIRE_ALL=1 but systemd-analyze is missing (scripts/deps.sh installs systemd)"
else
    echo "SKIPPED: systemd-analyze verify (no systemd-analyze; scripts/deps.sh installs systemd)"
fi

# lintian: no error, and only the warnings below, each for its reason.
if command -v lintian >/dev/null; then
    allowed='initial-upload-closes-no-bugs|no-manual-page|maintscript-calls-ldconfig|pkg-config-unavailable-for-cross-compilation'
    # initial-upload-closes-no-bugs: not uploaded to Debian.
    # no-manual-page: --help is the manual; docs/ in /usr/share/doc.
    # maintscript-calls-ldconfig: CPack's own ldconfig calls, beside the
    #   ldconfig trigger; harmless.
    # pkg-config-unavailable-for-cross-compilation: /usr/lib/pkgconfig,
    #   not the multiarch directory (CMAKE_INSTALL_LIBDIR of the build).
    out=$(lintian --no-tag-display-limit "$server" "$lib" "$dev" 2>&1 |
          grep -v '^running with root privileges' || true)
    bad=$(grep -E '^[EW]: ' <<<"$out" | grep -Ev "^W: [^ ]+ ($allowed)( |$)" || true)
    [ -z "$bad" ] || { echo "$out"; fail "lintian: $bad"; }
    echo "lintian: no errors; warnings only of the allowed kinds ($(grep -c '^W: ' <<<"$out" || true))"
else
    echo "lintian: not installed, not run (scripts/deps.sh --packaging installs it)"
fi

if [ "$mode" = quick ]; then
    echo "1 passed, 0 failed (quick; RAFTKV_PACKAGE_TEST=full also installs them on a clean Debian)"
    exit 0
fi

# -------------------------------------------- full: a clean Debian, apt
[ "$(id -u)" = 0 ] || fail "RAFTKV_PACKAGE_TEST=full needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null ||
    fail "RAFTKV_PACKAGE_TEST=full needs debootstrap (scripts/deps.sh --packaging)"
# shellcheck disable=SC1091
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || fail "no VERSION_CODENAME in /etc/os-release"
mirror=${RAFTKV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
echo "full: debootstrap --variant=minbase $suite from $mirror"
t0=$SECONDS
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
echo "full: clean $suite root in $((SECONDS - t0)) s"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$server" "$lib" "$dev" "$root/tmp/"
cp "$src/examples/hello.c" "$root/tmp/"
mount -t proc proc "$root/proc"

# The scenario, run inside the root: what docs/deploy.md tells an
# operator, on one host with three nodes (ports free on this machine).
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
p=$((32000 + RANDOM % 2000))
while [ ${#ports[@]} -lt 3 ]; do
    in_use "$p" || in_use $((p + 1)) || ports+=("$p")
    p=$((p + 2))
done
cat >"$root/tmp/scenario.sh" <<EOF
#!/bin/bash
set -euo pipefail
ports=(${ports[*]})
fail() { echo "FAIL (in the clean root): \$*"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends /tmp/raftkv-server_*.deb \
    /tmp/libclerk0_*.deb /tmp/libclerk-dev_*.deb >/tmp/apt.log 2>&1 ||
    { tail -20 /tmp/apt.log; fail "apt-get install of the packages"; }
for p in raftkv-server libclerk0 libclerk-dev; do
    [ "\$(dpkg-query -W -f='\${Status}' \$p)" = "install ok installed" ] ||
        fail "\$p is not installed"
done
# What postinst made.
getent passwd raftkv | grep -q ':/usr/sbin/nologin\$' || fail "no system user raftkv"
[ "\$(stat -c '%a %U %G' /var/lib/raftkv)" = "700 raftkv raftkv" ] ||
    fail "/var/lib/raftkv is \$(stat -c '%a %U %G' /var/lib/raftkv)"
[ "\$(stat -c '%a %U %G' /etc/raftkv)" = "750 root raftkv" ] ||
    fail "/etc/raftkv is \$(stat -c '%a %U %G' /etc/raftkv)"
dpkg-query -W -f='\${Conffiles}' raftkv-server | grep -q /etc/raftkv/kvserver.conf ||
    fail "kvserver.conf is not a registered conffile"
kvserver --version | grep -q '^kvserver $version ' || fail "installed kvserver --version"

# The secret, as docs/deploy.md makes it; one config per node, from the
# installed example (three nodes on this one host).
# (minbase has no openssl: the same 32 random bytes, in hex, from od.)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' |
    install -m 600 -o raftkv -g raftkv /dev/stdin /etc/raftkv/peer.secret
cl="1=127.0.0.1:\${ports[0]},2=127.0.0.1:\${ports[1]},3=127.0.0.1:\${ports[2]}"
pids=()
trap 'for p in "\${pids[@]}"; do kill -9 "\$p" 2>/dev/null || true; done' EXIT
for i in 1 2 3; do
    sed -e "s|^#id: 1|id: \$i|" -e "s|^data-dir: .*|data-dir: /var/lib/raftkv/node\$i|" \
        -e "s|^#peer-secret-file:|peer-secret-file:|" /etc/raftkv/kvserver.conf \
        >/etc/raftkv/node\$i.conf
    echo "cluster: \$cl" >>/etc/raftkv/node\$i.conf
    # As the unit runs it: user raftkv (setpriv execs, so the pid and the
    # exit status are kvserver's).
    setpriv --reuid=raftkv --regid=raftkv --init-groups \
        kvserver --config /etc/raftkv/node\$i.conf >/tmp/node\$i.log 2>&1 &
    pids+=(\$!)
done
eps="127.0.0.1:\${ports[0]},127.0.0.1:\${ports[1]},127.0.0.1:\${ports[2]}"
export RAFTKV_CLUSTER=\$eps
ok=0
for t in \$(seq 100); do
    if kvctl --timeout 1 put installed yes >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
done
[ \$ok = 1 ] || { tail -n 5 /tmp/node*.log; fail "put with the installed kvctl"; }
[ "\$(kvctl get installed)" = yes ] || fail "get with the installed kvctl"
kvctl -w table status
kvctl -w json status | grep -q '"role":"leader"' || fail "no leader in kvctl status"
[ "\$(stat -c %U /var/lib/raftkv/node1)" = raftkv ] || fail "node1's data is not raftkv's"

# libclerk-dev: a user's program builds against it through pkg-config.
apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config >/tmp/apt-gcc.log 2>&1 ||
    { tail -20 /tmp/apt-gcc.log; fail "apt-get install gcc"; }
gcc -Wall -Werror /tmp/hello.c -o /tmp/hello \$(pkg-config --cflags --libs raftkv-clerk) ||
    fail "hello.c does not build against libclerk-dev"
kvctl del hello >/dev/null 2>&1 || true
out=\$(/tmp/hello)
echo "\$out" | grep -qx 'hello -> world' || fail "hello printed: \$out"
deps=\$(ldd /tmp/hello)
grep -Eq 'libclerk[.]so[.]0 => (/usr)?/lib/libclerk[.]so[.]0 ' <<<"\$deps" ||
    fail "hello does not load the installed libclerk: \$deps"

# SIGTERM: each node stops cleanly, status 0.
for p in "\${pids[@]}"; do kill -TERM "\$p"; done
for p in "\${pids[@]}"; do
    st=0; wait "\$p" || st=\$?
    [ \$st = 0 ] || { tail -n 5 /tmp/node*.log; fail "a node exited \$st after SIGTERM"; }
done

# Remove, then purge: the data stays.
apt-get remove -y -qq raftkv-server libclerk-dev libclerk0 >/tmp/apt-rm.log 2>&1 ||
    { tail /tmp/apt-rm.log; fail "apt-get remove"; }
[ ! -e /usr/bin/kvserver ] || fail "kvserver still there after remove"
[ -f /etc/raftkv/kvserver.conf ] || fail "remove took the conffile (only purge may)"
dpkg --purge raftkv-server >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; fail "purge"; }
[ ! -e /etc/raftkv/kvserver.conf ] || fail "purge left the conffile"
[ -d /var/lib/raftkv/node1 ] || fail "purge deleted the data"
echo "scenario: ok"
EOF
chmod +x "$root/tmp/scenario.sh"
t0=$SECONDS
chroot "$root" /tmp/scenario.sh || fail "the installed packages (see above)"
echo "full: installed, ran a 3-node cluster, put/get, built hello, removed, purged in $((SECONDS - t0)) s"
echo "1 passed, 0 failed (full)"
