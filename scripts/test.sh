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

# Installed without starting their services (see scripts/apt-install.sh).
if [ ${#need[@]} -gt 0 ]; then
  bash scripts/apt-install.sh "${need[@]}"
fi

cargo test --workspace "$@"
