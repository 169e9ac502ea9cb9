#!/bin/sh
# Print the path of a Debian kernel (vmlinuz) for QEMU tests and the demo, fetching it once.
# The package is the one linux-image-amd64 depends on; it is unpacked with dpkg -x, never installed.
set -eu
cache="${WWFAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wwfast}/kernel"
found=$(ls "$cache"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$found" ]; then echo "$found"; exit 0; fi
mkdir -p "$cache"
chmod 755 "$cache"
resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
pkg=$(resolve)
if [ -z "$pkg" ]; then  # empty package lists (a fresh or cleaned machine): refresh them once
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q >/dev/null 2>&1 || true
    pkg=$(resolve)
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "fetch-kernel: apt-get download $pkg failed" >&2; exit 1; }
dpkg -x "$tmp"/*.deb "$tmp/x"
mkdir -p "$cache/boot"
# Modules too: the Debian kernel has e1000/virtio-net as modules, which demo images need for networking.
rm -rf "$cache/lib" && mkdir -p "$cache/lib" && cp -a "$tmp/x/lib/modules" "$cache/lib/"
# The kernel last: its presence marks the cache complete.
for f in "$tmp"/x/boot/vmlinuz-*; do cp "$f" "$cache/boot/.tmp" && mv "$cache/boot/.tmp" "$cache/boot/$(basename "$f")"; done
ls "$cache"/boot/vmlinuz-* | sort -V | tail -n 1
