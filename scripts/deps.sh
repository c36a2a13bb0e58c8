#!/usr/bin/env bash
# deps.sh: install the Debian packages raftkv needs to build and test, if any
# are missing. Needs root (or sudo) only when something must be installed.
#
#   scripts/deps.sh [--packaging]
#
# --packaging adds what the package test's optional parts need: lintian
# (run on the .deb files when it is installed) and debootstrap
# (RAFTKV_PACKAGE_TEST=full: a clean Debian to install them in). They are
# not in the default set: lintian alone is some 120 Perl packages, and the
# CI run has no time to spare.
set -euo pipefail

packages=(build-essential cmake pkg-config libprotobuf-c-dev
          protobuf-c-compiler libevent-dev liblmdb-dev libcunit1-dev
          clang libclang-rt-14-dev
          libssl-dev libsodium-dev  # TLS (bufferevent_openssl), HMAC, Argon2id
          libjansson-dev            # kvctl: JSON output and transactions
          libyaml-dev               # kvserver --config FILE
          openssl                   # cluster.sh makes a CA and certificates
          nftables iproute2   # packet-level partitions in test_netns; hosts
                              # made of namespaces in test_hosts
          systemd)            # systemd-analyze verify of the unit (deploy/)
# clients/python: its tests, and pip install of the package in a venv.
packages+=(python3 python3-venv python3-pip python3-setuptools python3-wheel)
if [ "${1:-}" = --packaging ]; then
    packages+=(lintian debootstrap)
elif [ $# -gt 0 ]; then
    echo "deps.sh: unknown option $1 (--packaging or nothing)" >&2
    exit 2
fi

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
