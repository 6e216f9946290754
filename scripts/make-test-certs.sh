#!/usr/bin/env bash
# Makes throw-away certificates for the TLS tests in DIR, with the openssl CLI (3.0 or
# later). Every key is ECDSA P-256; the good certificates are valid for 2 days from now.
# Keys are made at run time and never committed. Quiet on success; on failure it names the
# step and shows openssl's output. Safe to run again: it overwrites what is in DIR.
#
#   ca.pem/.key                  "SwiftRPC test CA"
#   server.pem/.key              by ca: CN=localhost, DNS:localhost, IP:127.0.0.1, IP:::1, serverAuth
#   client.pem/.key              by ca: CN=test-client, DNS:client.test,
#                                URI:spiffe://swiftrpc.test/client, clientAuth
#   other-ca.pem/.key            a second, unrelated CA
#   other-server.pem/.key        by other-ca, as server
#   other-client.pem/.key        by other-ca, as client
#   expired-server.pem/.key      by ca, as server, valid only on 2020-01-01
#   expired-client.pem/.key      by ca, as client, valid only on 2020-01-01
#   wrongname-server.pem/.key    by ca, serverAuth, SAN DNS:wrong.example only
#
# Usage: scripts/make-test-certs.sh DIR
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
command -v openssl >/dev/null || { echo "make-test-certs: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir" || { echo "make-test-certs: cannot create $dir" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077 # the keys; the certificates are made readable at the end
out=$work/out
mkdir "$out"

# run STEP CMD...: runs CMD with its output kept aside; on failure shows it and stops.
run() {
  local step=$1
  shift
  if ! "$@" >"$work/log" 2>&1; then
    echo "make-test-certs: $step failed: $*" >&2
    cat "$work/log" >&2
    exit 1
  fi
}

# One config for every step: no system openssl.cnf defaults leak in. `openssl ca` (rather
# than `x509 -req`) signs, because OpenSSL 3.0 can only back-date through its -startdate.
cat >"$work/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = req_dn
prompt             = no
[ req_dn ]

[ ca ]
default_ca = signer
[ signer ]
database        = $ENV::CERTS_DB/index.txt
serial          = $ENV::CERTS_DB/serial
new_certs_dir   = $ENV::CERTS_DB
default_md      = sha256
policy          = policy_any
unique_subject  = no
copy_extensions = none
email_in_dn     = no
[ policy_any ]
commonName = supplied

[ ca_ext ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
[ server_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ client_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectAltName         = DNS:client.test, URI:spiffe://swiftrpc.test/client
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ wrongname_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:wrong.example
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
EOF
export OPENSSL_CONF=$work/openssl.cnf CERTS_DB=$work/unused

# new_ca NAME CN: a self-signed CA NAME.pem/.key with its own signing database.
new_ca() {
  local name=$1 cn=$2
  mkdir "$work/$name.db"
  : >"$work/$name.db/index.txt"
  od -An -tx1 -N8 /dev/urandom | tr -d ' \n' >"$work/$name.db/serial"
  run "$name key and certificate" openssl req -x509 -new -config "$OPENSSL_CONF" \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/$name.key" \
    -subj "/CN=$cn" -extensions ca_ext -days 2 -out "$out/$name.pem"
}

# new_leaf NAME CA CN EXT [VALIDITY...]: NAME.pem/.key for CN, signed by CA with the
# extensions section EXT; VALIDITY defaults to 2 days from now.
new_leaf() {
  local name=$1 ca=$2 cn=$3 ext=$4
  shift 4
  (($#)) || set -- -days 2
  run "$name key and request" openssl req -new -config "$OPENSSL_CONF" \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/$name.key" \
    -subj "/CN=$cn" -out "$work/$name.csr"
  CERTS_DB=$work/$ca.db run "$name certificate" openssl ca -batch -notext -config "$OPENSSL_CONF" \
    -cert "$out/$ca.pem" -keyfile "$out/$ca.key" -extensions "$ext" "$@" \
    -in "$work/$name.csr" -out "$out/$name.pem"
}

past=(-startdate 20200101000000Z -enddate 20200102000000Z)
new_ca ca "SwiftRPC test CA"
new_ca other-ca "SwiftRPC other test CA"
new_leaf server ca localhost server_ext
new_leaf client ca test-client client_ext
new_leaf other-server other-ca localhost server_ext
new_leaf other-client other-ca test-client client_ext
new_leaf expired-server ca localhost server_ext "${past[@]}"
new_leaf expired-client ca test-client client_ext "${past[@]}"
new_leaf wrongname-server ca wrong.example wrongname_ext

chmod 644 "$out"/*.pem
mv -f "$out"/* "$dir"/ || { echo "make-test-certs: cannot write into $dir" >&2; exit 1; }
