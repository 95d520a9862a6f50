#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: the
# ClickHouse server (integration tests start private instances of it) and
# the Redis server. Needs root to install; elsewhere it says what is missing.
set -euo pipefail

need=()
[ -x /usr/sbin/clickhouse-server ] || command -v clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${need[*]}; run as root, or: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  # The tests themselves fail when CI=true and skip (saying why) elsewhere.
  exit 0
fi
echo "install-test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages' own services are not used: tests start private servers.
for svc in clickhouse-server redis-server; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
