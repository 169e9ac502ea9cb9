"""build stage: STATE/define/nodes.json + imported images -> STATE/build/ (archives, kernels, build.json).

Runs its steps in order; each returns per-node fields for build.json (and top-level keys), and
build.json is assembled from them and written last, atomically, only when every step succeeded
(otherwise the previous build.json stays and the stage exits 1). Runs through wwfast.runner: the
stage is current when nothing it reads changed (node database, settings, overlay and template
sources, the images it packs, its code); otherwise each step redoes only the images and nodes whose
own inputs changed (their records are the stamp's memory) and says why.

    python -m stages.build --conf conf --state var [--force]
"""
import argparse
import json
import os
import sys
import threading

import wwfast.data
from wwfast import layout, records, runner
from wwfast.builder import efiboot, fanout, image_archives as build_images, ipxe, overlay_build
from wwfast.define import settings
from wwfast.errors import ConfigError
from wwfast.fsutil import LockBusy, write_if_changed
from wwfast.dirs import add_dir_arguments

BUILD_FORMAT = 1


def node_step(ctx):
    """What compress needs of each node for the manifest, so it never reads the node database."""
    result = build_images.StepResult()
    for node_id, node in ctx.nodes.items():
        result.nodes[node_id] = {"macs": list(node.macs), "addresses": list(node.addresses),
                                 "asset_key": node.asset_key, "tags": dict(node.tags)}
    return result


def image_step(ctx):
    return build_images.run_step(ctx.state_dir, ctx.nodes, ctx.settings, force=ctx.force, log=ctx.log,
                                 memory=ctx.memory.setdefault("images", {}))


def overlay_step(ctx):
    return overlay_build.run_step(ctx.conf_dir, ctx.state_dir, ctx.nodes, ctx.settings, force=ctx.force, log=ctx.log,
                                  memory=ctx.memory.setdefault("overlays", {}), add_inputs=ctx.add_inputs)


def ipxe_step(ctx):
    return ipxe.run_step(ctx.conf_dir, ctx.state_dir, ctx.nodes, ctx.settings, log=ctx.log)


def efiboot_step(ctx):
    return efiboot.run_step(ctx.conf_dir, ctx.state_dir, ctx.nodes, ctx.settings, log=ctx.log)


# (name, function(ctx) -> build_images.StepResult). Later steps add their own fields to the same nodes.
STEPS = [
    ("node", node_step),
    ("images", image_step),
    ("overlays", overlay_step),
    ("ipxe", ipxe_step),
    ("grub", efiboot_step),     # only with warewulf: grubboot; its fields are optional
]
# A node is published only when every step gave it its fields (publish needs them all).
REQUIRED_FIELDS = ("macs", "addresses", "asset_key", "image", "image_cpio", "kernel", "system", "runtime", "ipxe")


def assemble(results, all_nodes, required=REQUIRED_FIELDS):
    """build.json from the steps' results; returns (document, names of nodes left out)."""
    doc = {"format": BUILD_FORMAT, "nodes": {}}
    merged = {}
    for result in results:
        for node_id, fields in result.nodes.items():
            merged.setdefault(node_id, {}).update(fields)
        doc.update(result.top)
    left_out = []
    for node_id in sorted(all_nodes):
        fields = merged.get(node_id, {})
        if all(k in fields for k in required):
            doc["nodes"][node_id] = fields
        else:
            left_out.append(node_id)
    return doc, left_out


class _Beside(threading.Thread):
    """A step run in a thread beside the others: the image pack spends its time in zstd's workers, in
    read() and in sha256, all outside the GIL, so the per-node steps run meanwhile instead of after it."""

    def __init__(self, step, ctx):
        super().__init__(name="build-images")
        self.step, self.ctx, self.result, self.error = step, ctx, None, None

    def run(self):
        try:
            self.result = self.step(self.ctx)
        except BaseException as e:    # raised again in the stage's thread, where the runner sees it
            self.error = e

    def outcome(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.result


BESIDE = ("images",)


def _start_beside(ctx):
    """{step name: started _Beside} when the other steps stay in this process (no forked workers: a fork
    while another thread runs would copy it half way); else {} and every step runs in turn."""
    if len(ctx.nodes) >= fanout.MIN_ITEMS:
        return {}
    started = {}
    for name, step in STEPS:
        if name in BESIDE:
            started[name] = _Beside(step, ctx)
            started[name].start()
    return started


def _run(ctx):
    ctx.nodes = records.read_nodes(layout.nodes_json(ctx.state_dir))
    results, errors = [], []
    beside = _start_beside(ctx)
    done = {}
    try:
        for name, step in STEPS:
            if name not in beside:
                done[name] = step(ctx)
        for name, thread in beside.items():
            done[name] = thread.outcome()
    finally:
        for thread in beside.values():    # a step failed: the pack still ends (and removes its temp files)
            thread.join()
    for name, _step in STEPS:
        _collect(name, done[name], ctx, results, errors)
    if errors:
        for error in errors:
            print(f"build: error: {error}", file=sys.stderr)
        print("build: build.json not updated", file=sys.stderr)
        return 1
    doc, left_out = assemble(results, ctx.nodes)
    if left_out:  # e.g. a node with no image name: it cannot boot, so it is not published
        ctx.log(f"build: warning: left out of build.json (incomplete): {', '.join(left_out)}")
    path = layout.build_json(ctx.state_dir)
    text = json.dumps(doc, sort_keys=True, indent=1) + "\n"
    if write_if_changed(path, text):
        ctx.log(f"build: wrote {path} ({len(doc['nodes'])} nodes)")
    else:
        ctx.log(f"build: build.json current ({len(doc['nodes'])} nodes)")
    return 0


def _collect(name, result, ctx, results, errors):
    for warning in result.warnings:
        ctx.log(f"build: warning: {warning}")
    errors += [f"{name}: {e}" for e in result.errors]
    results.append(result)


# The settings compress alone reads: a change there leaves the build current. (The build packs images
# straight into zstd/gzip, so the encodings and the zstd level are its settings too; the thread count
# changes no byte.)
COMPRESS_ONLY = {"threads", "path", "digest"}


def _images(ctx):
    """The images the last run packed (a node file naming another image changes nodes.json anyway)."""
    return sorted(ctx.memory.get("images", {}))


def _missing_outputs(ctx):
    """Per-node outputs the last run left that are gone (a stat each, as the steps did before the runner)."""
    nodes = ctx.memory.get("overlays", {}).get("nodes", {})
    missing = []
    for node_id in sorted(nodes):
        for path in (layout.overlay_archive(ctx.state_dir, node_id, "system"),
                     layout.overlay_archive(ctx.state_dir, node_id, "runtime"),
                     layout.ipxe_script(ctx.state_dir, node_id)):
            if not os.path.exists(path):
                missing.append(os.path.relpath(path, layout.build_dir(ctx.state_dir)))
    for shared in sorted({fp["system_shared"] for fp in nodes.values() if fp.get("system_shared")}):
        if not os.path.exists(os.path.join(layout.build_dir(ctx.state_dir), shared)):
            missing.append(shared)    # secure mode: the part of the system archives every node shares
    if not missing:
        return []
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return [f"{len(missing)} build output(s) missing: {shown}"]


def _image_outputs(ctx):
    out = layout.build_images_dir(ctx.state_dir)
    return [os.path.join(out, name) for meta in ctx.memory.get("images", {}).values()
            for name in sorted(f["file"] for f in meta["cpio"].get("packed", {}).values())
            + sorted(set(meta["kernel_files"].values()))]


STAGE = runner.Stage(
    name="build",
    run=_run,
    inputs=lambda ctx: [layout.nodes_json(ctx.state_dir)] + [layout.image_info(ctx.state_dir, i) for i in _images(ctx)],
    trees=lambda ctx: [os.path.join(ctx.conf_dir, d) for d in ("overlays", "ipxe", "grub")]
    + [os.path.dirname(wwfast.data.__file__)] + [layout.image_root(ctx.state_dir, i) for i in _images(ctx)],
    settings=lambda ctx: {k: v for k, v in ctx.settings.as_dict().items() if k not in COMPRESS_ONLY},
    facts=lambda ctx: {"SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "")},
    code=("wwfast.builder", "wwfast.records", "wwfast.layout", "wwfast.fsutil", "wwfast.cpio", "wwfast._cpio_py",
          "wwfast._cpio_common", "wwfast._cpio_walk", "wwfast._cpio?", __file__),
    outputs=lambda ctx: [layout.build_json(ctx.state_dir), layout.overlays_dir(ctx.state_dir),
                         layout.ipxe_dir(ctx.state_dir)] + _image_outputs(ctx),
    check=_missing_outputs,
)


def run(conf_dir, state_dir, force=False, out=print):
    """Returns the exit code."""
    return runner.run(STAGE, conf_dir, state_dir, settings.load(conf_dir), force=force, log=out).code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m stages.build", description=__doc__.splitlines()[0])
    add_dir_arguments(parser)
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    args = parser.parse_args(argv)
    try:
        return run(args.conf, args.state, force=args.force)
    except (ConfigError, FileNotFoundError, LockBusy, records.RecordError) as e:
        print(f"build: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
