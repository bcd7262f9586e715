#!/usr/bin/env bash
# Installs the servers the tests start (PostgreSQL 15, InfluxDB 1.x) from Debian's
# packages when they are missing. The tests start and stop them themselves.
set -euo pipefail
missing=()
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-services: need ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-services: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts the packaged services; the tests run their own on free ports.
for svc in influxdb postgresql; do
  (service "$svc" stop || true) >/dev/null 2>&1
done
