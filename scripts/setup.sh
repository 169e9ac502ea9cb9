#!/bin/sh
# Set up a fresh Debian machine for wwfast: Debian packages, a venv with wwfast installed in
# editable mode (Cython extensions compiled in place), and the Debian kernel for QEMU boots.
set -eu
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
pkgs=$(grep -v '^#' scripts/debian-packages.txt | tr '\n' ' ')
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null | awk '$NF != "installed" {print $1}'; \
          for p in $pkgs; do dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    $SUDO apt-get update -q
    # tftpd-hpa's package starts a daemon on port 69; policy-rc.d keeps it (and nginx) from starting.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $pkgs
    $SUDO rm -f /usr/sbin/policy-rc.d
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || $PYTHON -m venv .venv
# pip's build chatter goes to a log, shown only when the install fails.
log=$(mktemp)
if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[test]'; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "setup: pip install failed" >&2; exit 1
fi
rm -f "$log"
scripts/fetch-kernel.sh >/dev/null
echo "setup: done (.venv ready, kernel $(scripts/fetch-kernel.sh))"
