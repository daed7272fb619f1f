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

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]}. Install them (Debian: sudo apt-get install ${need[*]}) and run again." >&2
    exit 1
  fi
fi

cargo test --workspace "$@"
