#!/usr/bin/env bash
# Runs every test of the workspace. Starts nothing by hand: the tests start
# their own redis-server processes, chromedriver and headless chromium, mock
# upstreams and servers on free ports.
# What the tests need from the system is installed here when missing
# (Debian, as root), or named so you can install it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# The browser tests drive Debian's chromium through chromium-driver.
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The Prometheus tests run Debian's prometheus and promtool (one package).
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Install without starting services (the prometheus package would start
    # a daemon on :9090); the tests start their own on free ports.
    deny_starts=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      deny_starts=1
    fi
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ -n "$deny_starts" ]; then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "missing: ${need[*]}. Install them (Debian: sudo apt-get install ${need[*]}) and run again." >&2
    exit 1
  fi
fi

cargo test --workspace "$@"
