#!/bin/sh
# Regenerates the TLS test certificates (test use only; valid for 100 years, no passwords).
#   ca.pem          CA that signed server.pem and client.pem
#   other-ca.pem    an unrelated CA, for "wrong CA" tests
#   server.pem/.key server certificate for DNS:localhost only (so 127.0.0.1 is a host-name mismatch)
#   client.pem/.key client certificate for mutual TLS
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/ca.key" -out ca.pem -days $days -subj "/CN=stationflow test CA"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/other.key" -out other-ca.pem -days $days -subj "/CN=unrelated test CA"
openssl req -newkey rsa:2048 -nodes -keyout server.key -out "$tmp/server.csr" -subj "/CN=localhost"
printf "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n" > "$tmp/server.ext"
openssl x509 -req -in "$tmp/server.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial -CAserial "$tmp/ca.srl" \
  -out server.pem -days $days -extfile "$tmp/server.ext"
openssl req -newkey rsa:2048 -nodes -keyout client.key -out "$tmp/client.csr" -subj "/CN=stationflow"
printf "extendedKeyUsage=clientAuth\n" > "$tmp/client.ext"
openssl x509 -req -in "$tmp/client.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAserial "$tmp/ca.srl" \
  -out client.pem -days $days -extfile "$tmp/client.ext"
chmod 644 ./*.pem ./*.key
