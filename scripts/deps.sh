#!/usr/bin/env bash
# deps.sh: install the Debian packages raftkv needs to build and test, if any
# are missing. Needs root (or sudo) only when something must be installed.
set -euo pipefail

packages=(build-essential cmake pkg-config libprotobuf-c-dev
          protobuf-c-compiler libevent-dev liblmdb-dev libcunit1-dev
          clang libclang-rt-14-dev
          libssl-dev libsodium-dev  # TLS (bufferevent_openssl), HMAC, Argon2id
          libjansson-dev            # kvctl: JSON output and transactions
          openssl                   # cluster.sh makes a CA and certificates
          nftables iproute2)  # packet-level partitions in test_netns;
                              # hosts made of namespaces in test_hosts

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
