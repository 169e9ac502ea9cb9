"""Publish the build: a content-addressed store of what nodes download, and the manifest naming it.

    STATE/store/<sha256 of the uncompressed input>.cpio.zst | .cpio.gz | .kernel | .ipxe   (publish.store)
    STATE/publish/manifest.json     node -> artifacts (docs/formats.md); the commit point (publish.manifest)

Whether to run at all is the stage runner's decision (wwfast.runner, stages/compress.py); this module
publishes when called. Its memory between runs (input hashes by stat key, store hashes, retired store
files) is a dict the caller keeps: the compress stage's stamp.

Crash safety (kill -9 at any moment): store files appear only by rename of a whole temp file and are
never rewritten, because a name is fixed by its input's content; the manifest is replaced atomically
after every file it names is durable; store files the manifest no longer names are deleted only after a
grace period (publish.garbage), so a node that fetched the old manifest's files keeps getting them. A
killed run leaves at most temp files, which the next run removes while holding the lock.
"""
import os

from wwfast import canonjson, fsutil, layout
from wwfast.publish import build_outputs, manifest as manifests, packed
from wwfast.publish.build_outputs import settled_key, stat_key
from wwfast.publish.store import StoreWriter, as_publish_error, sync_written

# Bump when the same inputs would publish different bytes (compressor parameters, manifest layout).
STAGE_VERSION = "compress-2"


class Result:
    def __init__(self, changed, manifest, generation, compressed=0, reused=0, inputs=()):
        self.changed = changed          # a new manifest was committed
        self.manifest = manifest        # the manifest this run published (or found current)
        self.generation = generation
        self.compressed = compressed    # store files written
        self.reused = reused            # store files already present (same input content)
        self.inputs = list(inputs)      # the build outputs it read (paths)


def run(state_dir, settings, memory, progress=None):
    """Publish the build (the caller holds the stage's lock and decided it must run). `memory`: the
    previous run's record, updated in place. `progress`: None = a bar when stderr is a terminal."""
    base = layout.build_dir(state_dir)
    build, _ = build_outputs.read_build(state_dir)
    inputs = build_outputs.build_inputs(build, os.path.join(base, "build.json"))
    with as_publish_error():
        packs = packed.read(build, os.path.join(base, "build.json"))
    inputs.update((rel, "packed") for rel in packs)   # packed by the build: linked, not compressed
    gzip_needed = build_outputs.gzip_needed(build)
    prefixes = build_outputs.prefixes(build)
    store = StoreWriter(state_dir, settings, progress, packs, gzip_needed, prefixes)
    known_inputs = memory.get("inputs", {}) if memory.get("version") == STAGE_VERSION else {}
    known_store = dict(memory.get("store", {}))
    previous = manifests.load_manifest(state_dir)
    if previous:
        known_store.update({name: list(v) for name, v in manifests.manifest_files(previous).items()})

    os.makedirs(store.store, exist_ok=True)
    hashed, fused = store.hash_inputs(inputs, known_inputs)
    for rel, path, key in fused:
        hashed[rel] = store.compress_unhashed(path, key, known_store)
    entries = store.fill(inputs, hashed, known_store)
    sync_written(store)   # every file the manifest will name is durable before it
    manifest = manifests.make_manifest(state_dir, build, entries, settings, gzip_needed)
    changed = previous is None or manifests.body(previous) != manifests.body(manifest)
    if changed:
        fsutil.atomic_write(manifests.manifest_path(state_dir), canonjson.dumps(manifest) + "\n")  # commit point
    else:
        manifest = previous
    recorded = {rel: settled_key(os.path.join(base, rel), hashed[rel][0]) + [hashed[rel][1]]
                + ([hashed[prefixes[rel]][1]] if rel in prefixes else [])
                for rel in inputs if inputs[rel] != "packed"}
    for rel in packs:   # a packed archive is checked next time by its files
        for enc, name in packed.files(packs[rel]).items():
            path = os.path.join(base, name)
            recorded[name] = settled_key(path, stat_key(os.stat(path))) + [packs[rel][enc]["sha256"]]
    memory.update({
        "version": STAGE_VERSION,
        "inputs": recorded,
        "store": {name: [size, sha] for name, (size, sha) in manifests.manifest_files(manifest).items()},
        "generation": manifest["generation"],
    })
    read = [os.path.join(base, name) for rel in sorted(inputs)
            for name in (packed.files(packs[rel]).values() if rel in packs else [rel])]
    return Result(changed, manifest, manifest["generation"], store.compressed, store.reused, read)


def settings_key(settings):
    """The settings this stage reads."""
    from wwfast.define.cluster_settings import cache_tier
    return {"zstd_level": settings.zstd_level, "gzip": bool(settings.gzip),
            "secure": bool(settings.secure), "update_interval": settings.update_interval,
            "cache_group_tag": getattr(settings, "cache_group_tag", ""), "cache_tier": cache_tier(settings)}
