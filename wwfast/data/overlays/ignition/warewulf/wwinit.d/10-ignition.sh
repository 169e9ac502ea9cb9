#!/bin/sh
# First-stage disk set-up: ignition partitions and formats from /warewulf/ignition.json, then leaves
# a marker so that ww-ignition.service does not run it again after the switch to the image's init.
PATH=$PATH:/sbin:/usr/sbin:/bin:/usr/bin
command -v info >/dev/null || info() { printf '%s\n' "$*"; }
command -v die >/dev/null || die() { printf '%s\n' "$*" >&2; exit 1; }

if ! command -v ignition >/dev/null; then
    info "warewulf: ignition not found"
    exit 0
fi
info "warewulf: ignition: partition and format disks"
ignition --config-cache="${PREFIX}/warewulf/ignition.json" --platform=metal --stage=disks \
    || die "warewulf: ignition: failed to partition/format disk"
mkdir -p "${PREFIX}/warewulf/run"
echo "ignition run by 10-ignition.sh" >"${PREFIX}/warewulf/run/.ignition-done"
