#!/bin/sh
# Make the secrets docker/compose.yaml reads (docker/secrets/, never committed): the bootstrap
# admin token, the master secret, a network element's native key, the provisioning HMAC key,
# the archive's AES-256 key, and a private CA with the admin API's certificate (for the
# names ocs, localhost and 127.0.0.1). Run once: sh docker/secrets.sh
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
umask 077
cd "$dir"
[ -s admin_token ] || openssl rand -hex 24 > admin_token
[ -s secret_key ] || openssl rand -hex 32 > secret_key
[ -s native_keys ] || printf 'ne1:%s\n' "$(openssl rand -hex 24)" > native_keys
[ -s provisioning_secret ] || openssl rand -hex 32 > provisioning_secret
[ -s archive_key ] || openssl rand -hex 32 > archive_key
if [ ! -s ocs.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=OCS demo CA" \
    -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=ocs" -keyout ocs.key -out ocs.csr 2>/dev/null
  printf 'subjectAltName=DNS:ocs,DNS:localhost,IP:127.0.0.1\n' > san.ext
  openssl x509 -req -in ocs.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile san.ext -out ocs.pem 2>/dev/null
  rm -f ocs.csr san.ext ca.srl
fi
# The image runs as uid 10001: it must read what it is given.
chmod 644 ./*
echo "secrets in $dir (admin token: $(cat admin_token))"
