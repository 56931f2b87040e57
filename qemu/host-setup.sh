#!/usr/bin/env bash
# Installs the host packages listed in host-packages.txt (at the repo top) that are
# missing, with apt. Quiet when all are present. Run by `make host-setup`.
# Needs root only when something is missing; otherwise prints the command to run and fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list="$here/../host-packages.txt"

mapfile -t pkgs < <(sed 's/#.*//; s/^[[:space:]]*//; s/[[:space:]]*$//' "$list" | grep -v '^$')

missing=()
for pkg in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "host-setup: all ${#pkgs[@]} host packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "host-setup: missing host packages: ${missing[*]}; as root, run:" >&2
  echo "  apt-get update -qq && apt-get install -y -qq --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "host-setup: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "host-setup: installed ${missing[*]}"
