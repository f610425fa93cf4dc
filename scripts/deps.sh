#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages depthkv's build needs, skipping those already present.
# Usage: scripts/deps.sh [extra-package ...]   (as root, or with sudo available)
set -euo pipefail
pkgs=(cmake g++ make pkg-config libeigen3-dev catch2 libbenchmark-dev libcli11-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "depthkv: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
