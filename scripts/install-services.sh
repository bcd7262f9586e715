#!/usr/bin/env bash
# Installs what the tests use from Debian's packages when it is missing: the
# servers they start and stop themselves (PostgreSQL 15, InfluxDB 1.x) and
# docker-compose, which validates docker-compose.yml without a Docker engine.
set -euo pipefail
missing=()
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
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
