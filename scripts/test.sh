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

# The identity-proxy test puts Debian's nginx in front (auth_basic).
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || need+=(nginx-light)

# Installed without starting their services (see scripts/apt-install.sh).
if [ ${#need[@]} -gt 0 ]; then
  bash scripts/apt-install.sh "${need[@]}"
fi

# The Kubernetes manifests are checked with kubernetes-validate (PyPI).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing: kubernetes-validate (PyPI)" >&2
  # Debian's own python3 refuses user installs without the flag (PEP 668).
  python3 -m pip install --quiet kubernetes-validate \
    || python3 -m pip install --quiet --user --break-system-packages kubernetes-validate
  export PATH="$PATH:$HOME/.local/bin"
  hash -r
fi

cargo test --workspace "$@"
