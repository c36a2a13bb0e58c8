#!/usr/bin/env bash
# certs.sh: a private CA and certificates for a raftkv cluster, made with the
# openssl command (for scripts/cluster.sh start --tls, the tests, and as an
# example for real deployments; docs/security.md).
#
#   scripts/certs.sh ca DIR                   DIR/ca.crt, DIR/ca.key
#   scripts/certs.sh node DIR NAME ADDR...    DIR/NAME.crt, DIR/NAME.key:
#                                             CN=NAME, SANs DNS:NAME and each
#                                             ADDR (an IP or a host name),
#                                             for serving and for connecting
#   scripts/certs.sh client DIR NAME          DIR/NAME.crt, DIR/NAME.key:
#                                             CN=NAME, for client auth (the
#                                             CN is the raftkv user)
#
# Keys are ECDSA P-256, mode 600; certificates last 825 days (CA: 10 years).
set -euo pipefail

die() { echo "certs.sh: $*" >&2; exit 1; }
command -v openssl >/dev/null || die "the openssl command is missing"

cmd=${1:-help}
dir=${2:-}
[ "$cmd" = help ] || [ -n "$dir" ] || die "usage: certs.sh ca|node|client DIR ..."

key() { # file
    (umask 077 && openssl genpkey -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

sign() { # name, extensions file
    local name=$1 ext=$2
    openssl req -new -key "$dir/$name.key" -subj "/CN=$name" \
        -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" \
        -CAkey "$dir/ca.key" -CAcreateserial -days 825 -sha256 \
        -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    rm -f "$dir/$name.csr" "$ext"
}

case "$cmd" in
ca)
    mkdir -p "$dir"
    key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=raftkv CA" \
        -days 3650 -sha256 -out "$dir/ca.crt" 2>/dev/null
    ;;
node)
    name=${3:-}
    [ -n "$name" ] || die "node needs a NAME"
    [ -f "$dir/ca.key" ] || die "no CA in $dir: run certs.sh ca $dir first"
    shift 3
    san="DNS:$name"
    for a in "$@"; do
        if [[ $a =~ ^[0-9.]+$ || $a == *:* ]]; then san+=",IP:$a"; else san+=",DNS:$a"; fi
    done
    key "$dir/$name.key"
    ext=$(mktemp)
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
        "$san" >"$ext"
    sign "$name" "$ext"
    ;;
client)
    name=${3:-}
    [ -n "$name" ] || die "client needs a NAME"
    [ -f "$dir/ca.key" ] || die "no CA in $dir: run certs.sh ca $dir first"
    key "$dir/$name.key"
    ext=$(mktemp)
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >"$ext"
    sign "$name" "$ext"
    ;;
help|-h|--help)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    die "unknown command '$cmd' (ca, node, client)"
    ;;
esac
