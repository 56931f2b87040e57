#!/usr/bin/env bash
# Builds the guest root fs into the (empty or absent) directory $1, with every package
# pinned to the version in the lock file $2 if one is given (qemu/rootfs.lock).
# Called by `python -m qemu_launcher.assets build` (pinned) and `... assets lock`
# (unpinned), which own caching, locking, the atomic rename and the comparison of the
# result with the lock: never point this at a directory that is in use.
set -euo pipefail
out=${1:?usage: build-rootfs.sh OUTDIR [LOCKFILE]}
lock=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${EEH_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! command -v mmdebstrap >/dev/null; then
  echo "build-rootfs: installing mmdebstrap" >&2
  apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null
fi

pkgs=$(grep -v '^\s*#' "$here/rootfs-packages.txt" | grep -v '^\s*$' | sed 's,/.*,,' | paste -sd, -)
# Packages named "pkg/trixie-backports" are pinned to backports, with their own deps
# (qemu-system-* and qemu-* must come as one set).
pins=$(grep -o '^[a-z0-9.+-]*/trixie-backports' "$here/rootfs-packages.txt" | sed 's,/.*,,' | paste -sd' ' -)

# The lock: one apt preference per package, priority 1001, matching that exact version.
# A version the archive no longer has matches nothing, and apt falls back to the
# candidate it would have chosen anyway (the backports pin above still applies); the
# caller compares the result with the lock and reports every difference.
lock_hook=()
if [ -n "$lock" ]; then
  prefs=$(mktemp)
  trap 'rm -f "$prefs"' EXIT
  grep -v '^\s*#' "$lock" | grep -v '^\s*$' | while IFS='=' read -r name version; do
    printf 'Package: %s\nPin: version %s\nPin-Priority: 1001\n\n' "$name" "$version"
  done >"$prefs"
  echo "build-rootfs: pinning $(grep -c '^Package:' "$prefs") packages to $lock" >&2
  lock_hook=(--setup-hook="cp '$prefs' \"\$1/etc/apt/preferences.d/rootfs-lock\"")
fi

mmdebstrap --variant=minbase --mode=root \
  --aptopt='APT::Install-Recommends "false"' \
  --include="$pkgs" \
  --setup-hook='mkdir -p "$1/etc/apt/preferences.d"' \
  --setup-hook="printf 'Package: %s qemu-* seabios ipxe-qemu libslirp0 libfdt1\\nPin: release n=trixie-backports\\nPin-Priority: 990\\n' '$pins' > \"\$1/etc/apt/preferences.d/backports\"" \
  "${lock_hook[@]}" \
  --customize-hook='mkdir -p "$1/mnt/repo" "$1/mnt/results" "$1/newroot"' \
  --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
  trixie "$out" \
  "deb $mirror trixie main" \
  "deb $mirror trixie-backports main"
