#!/usr/bin/env bash
# deps.sh: install the Debian packages raftkv needs, if any are missing.
# Needs root (or sudo) only when something must be installed.
#
#   scripts/deps.sh [--build | --test] [--packaging]
#
# --build      what building raftkv and running a cluster take (compiler,
#              CMake, the libraries, CUnit, which the build's configure
#              step requires, and openssl for cluster.sh's secret and
#              certificates). scripts/cluster.sh and bench/compare.sh
#              install this set.
# --test       (the default) the build set and what the test suites need
#              besides: clang and its runtime (the fuzz targets), nftables
#              and iproute2 (packet-level partitions in test_netns; hosts
#              made of namespaces in test_hosts), systemd (systemd-analyze
#              verify of the unit in deploy/), python3 with venv and pip
#              (clients/python's tests). scripts/test.sh and .ci/run
#              install this set.
# --packaging  adds what the package test's optional parts need: lintian
#              (run on the .deb files when it is installed) and debootstrap
#              (RAFTKV_PACKAGE_TEST=full: a clean Debian to install them
#              in). Not in the default set: lintian alone is some 120 Perl
#              packages, and the CI run has no time to spare.
set -euo pipefail

build=(build-essential cmake pkg-config libprotobuf-c-dev
       protobuf-c-compiler libevent-dev liblmdb-dev
       libcunit1-dev             # CMake's configure step requires it
       libssl-dev libsodium-dev  # TLS (bufferevent_openssl), HMAC, Argon2id
       libjansson-dev            # kvctl: JSON output and transactions
       libyaml-dev               # kvserver --config FILE
       openssl)                  # cluster.sh makes a secret, a CA, certificates
test=(clang libclang-rt-14-dev   # libFuzzer targets
      nftables iproute2          # packet-level partitions in test_netns;
                                 # hosts made of namespaces in test_hosts
      systemd                    # systemd-analyze verify of the unit (deploy/)
      python3 python3-venv python3-pip python3-setuptools python3-wheel)
                                 # clients/python: its tests, pip install
                                 # of the package in a venv
set_name=all packaging=false
for arg in "$@"; do
    case "$arg" in
        --build) set_name=build ;;
        --test) set_name=all ;;
        --packaging) packaging=true ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "deps.sh: unknown option $arg (--build, --test, --packaging)" >&2
           exit 2 ;;
    esac
done
packages=("${build[@]}")
if [ "$set_name" = all ]; then packages+=("${test[@]}"); fi
if [ "$packaging" = true ]; then packages+=(lintian debootstrap); fi

missing=()
for p in "${packages[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || st=
    [ "$st" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
