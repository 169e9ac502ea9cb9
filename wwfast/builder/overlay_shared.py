"""In secure mode a node's system overlay comes in two parts: one archive shared by every node with the
same system overlay list, and the node's own.

Why: in secure mode the system archive is all a node has at boot (the runtime overlay comes later, from
the node agent), so it carries /etc/hosts, which lists every node: 473 KB at 10,000 nodes. Written into
every node's archive that is 4.7 GB for one build, and the build stage spent most of its time in the
kernel allocating and copying it. The part that does not depend on the node (static files, templates
that do not look at the node such as hosts and ssh host keys) is now packed once, into
STATE/build/overlays/.shared/system-<sha256>.cpio (named by its content); the node's own archive holds
only what its per-node templates render, plus the directories above them with the modes they have in
the whole overlay.

The node still gets one system archive: the compress stage publishes the two parts back to back, each
a whole newc archive in its own zstd frame, and the kernel unpacks concatenated archives in order, so
the node's tree is exactly the one archive's. A file a per-node template renders wins over a shared
file of the same path, as it does in the merged overlay (the shared part leaves out nothing the node's
part could lose to: the merge decided the winner, and only the node's winners are in its part).
"""
import hashlib
import json
import os

from wwfast import fsutil, layout
from wwfast.builder.overlay_items import holds, pack


def shared_items(steps):
    """The merged items of a plan's node-independent steps ({rel: Item}, later overlays winning)."""
    merged = {}
    for kind, step in steps:
        if kind == "item":
            merged[step.rel] = step
    return merged


def own_items(merged):
    """The node's own part of its merged system overlay: what per-node templates rendered."""
    return {rel: it for rel, it in merged.items() if it.shared_id is None}


def write_shared(state_dir, merged, mtime):
    """Pack the shared part once; returns its path relative to the build directory.

    Named by the sha256 of its bytes, so a name never changes content: the compress stage may trust a
    name it has hashed before. Written only when absent or not holding those bytes.
    """
    data = pack(dict(merged), mtime=mtime)
    name = f"system-{hashlib.sha256(data).hexdigest()}.cpio"
    path = os.path.join(layout.shared_overlays_dir(state_dir), name)
    if not holds(path, data):
        fsutil.atomic_write(path, data, fsync=True)
    return os.path.relpath(path, layout.build_dir(state_dir))


def remove_unused(state_dir, keep):
    """Delete shared archives no node names any more (`keep`: build-relative paths still named)."""
    directory = layout.shared_overlays_dir(state_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    kept = {os.path.basename(rel) for rel in keep}
    removed = []
    for name in sorted(names):
        if name.startswith("system-") and name.endswith(".cpio") and name not in kept:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def rename_in_build_json(state_dir, shared_by_node):
    """After `wwfast overlay build` (overlays rebuilt outside a build stage run): point build.json's nodes
    at the shared parts their new archives go with, so compress never pairs a new own part with an old
    shared part (or names one that was removed). Nodes build.json does not list are left to the next
    build. Returns the number of nodes changed."""
    path = layout.build_json(state_dir)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return 0
    changed = 0
    for node_id, entry in doc.get("nodes", {}).items():
        rel = shared_by_node.get(node_id)
        if entry.get("system_shared") != rel:
            if rel:
                entry["system_shared"] = rel
            else:
                entry.pop("system_shared", None)
            changed += 1
    if changed:   # the build stage's own format: stages/build.py writes it the same way
        fsutil.atomic_write(path, json.dumps(doc, sort_keys=True, indent=1) + "\n")
    return changed
