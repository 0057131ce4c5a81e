#!/bin/sh
# Installs what the benchmarks (bench/run.ts, `npm run bench`) need beyond scripts/install-deps:
#   runc   the reference OCI runtime the agent's container start is compared with
# Idempotent; needs root (or sudo).
set -eu
pkgs="runc"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "bench/install-deps.sh: installing$missing"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
fi
echo "bench/install-deps.sh: $(runc --version | head -1)"
