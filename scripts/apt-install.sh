#!/usr/bin/env bash
# Installs Debian packages that the tests or benches need, without starting
# their services (the prometheus and nginx packages would start daemons on
# fixed ports; the tests and benches start their own on free ports).
#
# Usage: bash scripts/apt-install.sh PACKAGE...
# As root on Debian it installs them; elsewhere it names them and exits 1.
set -euo pipefail
[ $# -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: $*. Install them (Debian: sudo apt-get install $*) and run again." >&2
  exit 1
fi
echo "installing: $*" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
deny_starts=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  deny_starts=1
fi
status=0
apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
if [ -n "$deny_starts" ]; then rm -f /usr/sbin/policy-rc.d; fi
exit "$status"
