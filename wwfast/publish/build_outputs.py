"""What the compress stage publishes, as the build stage left it: build.json's nodes and the files they
name, which archives need gzip too, and stat keys that tell whether an output moved since it was published.
"""
import json
import os

from wwfast import fsutil, layout
from wwfast.publish import PublishError

ARCHIVES = (("image", "image_cpio"), ("system", "system"), ("runtime", "runtime"))
PREFIX_FIELD = "system_shared"    # build.json: the shared part published ahead of a node's system archive
# The GRUB chain (build.json fields only with grubboot): (manifest artifact, build.json field, store kind).
BOOT_LOADERS = (("grub", "grub", "grub"), ("shim", "shim", "efi"), ("grubefi", "grubefi", "efi"))


def build_dir(state_dir):
    return layout.build_dir(state_dir)


def stat_key(st):
    # A rebuilt file arrives by rename (new inode); an edit in place changes mtime and ctime.
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def settled_key(path, key):
    """The stat key to remember for an input read with `key`: the same, but with the ctime it has now
    when only that moved (the store took a hard link to it), so the link is no change next time."""
    try:
        now = stat_key(os.stat(path))
    except FileNotFoundError:
        return key
    return now if [now[0], now[1], now[3]] == [key[0], key[1], key[3]] else key


def stale_items(state_dir, memory):
    """The compress stage's own check beside the runner's (per item, against its memory): build outputs
    whose stat moved since they were published, and store files the manifest names that are gone or
    changed size. Returns reasons ([] = nothing)."""
    reasons = []
    base = build_dir(state_dir)
    changed = []
    for rel, known in sorted(memory.get("inputs", {}).items()):
        try:
            if stat_key(os.stat(os.path.join(base, rel))) != known[:4]:
                changed.append(rel)
        except FileNotFoundError:
            changed.append(rel + " (missing)")
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        reasons.append(f"{len(changed)} build output(s) changed: {shown}")
    store = layout.store_dir(state_dir)
    for name, (size, _) in sorted(memory.get("store", {}).items()):
        try:
            if os.stat(os.path.join(store, name)).st_size != size:
                reasons.append(f"store file {name} has the wrong size")
                break
        except FileNotFoundError:
            reasons.append(f"store file {name} is missing")
            break
    return reasons


def _read_bytes(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise PublishError(f"{path} does not exist: run the {what} stage first") from None


def read_build(state_dir):
    """(build.json as a dict, sha256 of its bytes); PublishError if it is missing or not build's format."""
    path = layout.build_json(state_dir)
    raw = _read_bytes(path, "build")
    try:
        build = json.loads(raw)
        if build.get("format") != 1 or not isinstance(build.get("nodes"), dict):
            raise ValueError("expected {\"format\": 1, \"nodes\": {...}}")
    except (ValueError, AttributeError) as e:
        raise PublishError(f"{path}: {e}") from None
    return build, fsutil.sha256_bytes(raw)


def build_inputs(build, path):
    """{relative path: kind} of every distinct build output to publish (kind: archive, kernel, ipxe, grub,
    efi; "prefix": a shared part published only at the head of the archives that name it, see prefixes)."""
    inputs = {}
    try:
        for node_id, entry in build["nodes"].items():
            inputs[entry["kernel"]] = "kernel"
            inputs[entry["ipxe"]] = "ipxe"
            for _, key in ARCHIVES:
                inputs[entry[key]] = "archive"
            if entry.get(PREFIX_FIELD):
                inputs[entry[PREFIX_FIELD]] = "prefix"
            for _, key, kind in BOOT_LOADERS:
                if entry.get(key):
                    inputs[entry[key]] = kind
        if build.get("unknown_ipxe"):
            inputs[build["unknown_ipxe"]] = "ipxe"
    except (KeyError, TypeError) as e:
        raise PublishError(f"{path}: node {node_id!r} lacks {e}") from None
    for rel in inputs:
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise PublishError(f"{path}: {rel!r} is not a path inside the build directory")
    return inputs


def prefixes(build):
    """{system archive: its shared part} (secure mode, wwfast.builder.overlay_shared): the node's archive
    as published is the shared part, then its own, each a whole newc archive."""
    return {entry["system"]: entry[PREFIX_FIELD] for entry in build["nodes"].values() if entry.get(PREFIX_FIELD)}


def gzip_needed(build):
    """Archives (build-relative paths) of nodes whose kernel cannot unpack zstd: they are gzipped too."""
    from wwfast.builder.kernels import reads_zstd
    return {entry[key] for entry in build["nodes"].values() if not reads_zstd(entry.get("kernel_version"))
            for _, key in ARCHIVES}
