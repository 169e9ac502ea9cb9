"""The published manifest (STATE/publish/manifest.json, docs/formats.md): where it and the store are,
reading it, the store files it names, and making it from build.json alone.
"""
import json
import time

from wwfast import canonjson, fsutil, layout
from wwfast.publish import PublishError
from wwfast.publish.build_outputs import ARCHIVES, BOOT_LOADERS

FORMAT = 1
# What the manifest needs of a node, from build.json (the build stage copies it from nodes.json).
NODE_FIELDS = ("macs", "addresses", "asset_key")


def store_dir(state_dir):
    return layout.store_dir(state_dir)


def publish_dir(state_dir):
    return layout.publish_dir(state_dir)


def manifest_path(state_dir):
    return layout.manifest(state_dir)


def load_manifest(state_dir):
    """The published manifest as a dict, or None before the first publish."""
    path = manifest_path(state_dir)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError as e:  # cannot happen through us (atomic writes); say where if a person edited it
        raise PublishError(f"{path}: not valid JSON: {e}") from None


def manifest_files(manifest):
    """{store file name: (size, sha256)} of every file the manifest names."""
    files = {}

    def add(artifact):
        for entry in artifact.values():
            files[entry["file"]] = (entry["size"], entry["sha256"])

    if manifest.get("unknown_ipxe"):
        add(manifest["unknown_ipxe"])
    for node in manifest.get("nodes", {}).values():
        for artifact in node["artifacts"].values():
            add(artifact)
    return files


def entry(name, size, sha):
    """One encoding of an artifact as the manifest names it."""
    return {"file": name, "size": size, "sha256": sha}


def body(manifest):
    """The manifest without its generation: equal bodies mean nothing to publish."""
    return {k: v for k, v in manifest.items() if k != "generation"}


def cache_group(tags, settings):
    """The node's cache group with a cache tier: the value of its tag `cluster: cache group tag` ('' if none).
    `tags`: the node's tags as build.json carries them (or a records.Node)."""
    tags = getattr(tags, "tags", tags)
    from wwfast.cluster.placement import node_group
    from wwfast.define.cluster_settings import cache_tier
    if not cache_tier(settings):
        return ""
    return node_group(tags, settings.cache_group_tag)


def make_manifest(state_dir, build, entries, settings, gzip_needed):
    """The manifest from build.json alone: what it needs of a node (MACs, addresses, asset key, tags)
    comes through the build's output, not from the node database. `entries`: {build output: {encoding:
    entry}} of the store files; `gzip_needed`: archives of nodes whose kernel predates zstd."""
    out_nodes = {}
    for node_id, b in sorted(build["nodes"].items()):
        missing = [k for k in NODE_FIELDS if k not in b]
        if missing:
            raise PublishError(f"{layout.build_json(state_dir)}: node {node_id!r} lacks "
                               f"{', '.join(missing)}: run the build stage")
        artifacts = {"ipxe": {"raw": entries[b["ipxe"]]["ipxe"]},
                     "kernel": {"raw": entries[b["kernel"]]["kernel"]}}
        for artifact, key in ARCHIVES:
            artifacts[artifact] = dict(entries[b[key]])
        for artifact, key, kind in BOOT_LOADERS:
            if b.get(key):
                artifacts[artifact] = {"raw": entries[b[key]][kind]}
        out_nodes[node_id] = {
            "macs": list(b["macs"]),
            "addresses": list(b["addresses"]),
            "asset_key": b["asset_key"],
            "artifacts": artifacts,
        }
        if b[ARCHIVES[0][1]] in gzip_needed:
            out_nodes[node_id]["encoding"] = "gz"      # its kernel predates zstd initrds
        group = cache_group(b.get("tags", {}), settings)
        if group:           # serve lists this group's caches first in the node's script (scale-out)
            out_nodes[node_id]["cache_group"] = group
    manifest = {
        "format": FORMAT,
        "settings": {"secure": bool(settings.secure),
                     "update_interval": settings.update_interval},
        "nodes": out_nodes,
    }
    if build.get("unknown_ipxe"):
        manifest["unknown_ipxe"] = {"raw": entries[build["unknown_ipxe"]]["ipxe"]}
    digest = fsutil.sha256_bytes(canonjson.dumps(manifest).encode())
    manifest["generation"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + digest[:8]
    return manifest
