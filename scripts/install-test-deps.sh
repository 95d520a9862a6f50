#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Every server
# is started privately by the tests themselves (free loopback port, data in a
# temp directory); the packages' own services are stopped and never used.
#   clickhouse-server  recorder/clickhouse, examples/clickhouse, bench
#   redis-server       redisstate, bench
#   postgresql         recorder/sql (PostgreSQL dialect)
#   mariadb-server     recorder/sql (MySQL/MariaDB dialect)
#   zookeeper          recorder/clickhouse cluster tests (replicated tables)
#   chromium           dashboard browser tests (headless)
#   curl               cmd/apipool proxy tests (a real client)
#   ca-certificates    deploy/image and its test (the CA bundle the image
#                      carries: /etc/ssl/certs/ca-certificates.crt)
#   nodejs, npm        cmd/apipool proxy tests (the openai npm package), when
#                      the machine has no Node.js of its own
# The proxy's npm test installs its pinned packages itself (npm ci).
# Needs root to install; elsewhere it says what is missing.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

need=()
have clickhouse-server || need+=(clickhouse-server)
have redis-server || need+=(redis-server)
{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || need+=(postgresql)
{ have mariadbd && have mariadb-install-db; } || need+=(mariadb-server)
[ -f /usr/share/zookeeper/bin/zkServer.sh ] || need+=(zookeeper)
{ have chromium; } || need+=(chromium)
have curl || need+=(curl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# The proxy's client test runs the openai npm package; the machine's own
# Node.js is used when there is one, Debian's otherwise.
{ have node && have npm; } || need+=(nodejs npm)

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
# Keep the packages' own services from starting at install time.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for svc in clickhouse-server redis-server postgresql mariadb zookeeper; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
