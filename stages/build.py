"""build stage: STATE/define/nodes.json + imported images -> STATE/build/ (archives, kernels, build.json).

Runs its steps in order; each returns per-node fields for build.json (and top-level keys), and
build.json is assembled from them and written last, atomically, only when every step succeeded
(otherwise the previous build.json stays and the stage exits 1). Steps skip the work whose
inputs are unchanged and say why they redo the rest.

    python -m stages.build --conf conf --state var [--force]
"""
import argparse
import json
import sys

from wwfast import layout, records
from wwfast.build import efiboot, image_archives as build_images, ipxe, overlay_build
from wwfast.define import settings
from wwfast.errors import ConfigError
from wwfast.fsutil import LockBusy, atomic_write, locked
from wwfast.cli import add_dir_arguments

BUILD_FORMAT = 1


def image_step(ctx):
    return build_images.run_step(ctx.state_dir, ctx.nodes, ctx.settings, force=ctx.force, log=ctx.log)


def overlay_step(ctx):
    return overlay_build.run_step(ctx.conf_dir, ctx.state_dir, ctx.nodes, ctx.settings, force=ctx.force, log=ctx.log)


def ipxe_step(ctx):
    return ipxe.run_step(ctx.conf_dir, ctx.state_dir, ctx.nodes, ctx.settings, log=ctx.log)


def efiboot_step(ctx):
    return efiboot.run_step(ctx.conf_dir, ctx.state_dir, ctx.nodes, ctx.settings, log=ctx.log)


# (name, function(ctx) -> build_images.StepResult). Later steps add their own fields to the same nodes.
STEPS = [
    ("images", image_step),
    ("overlays", overlay_step),
    ("ipxe", ipxe_step),
    ("grub", efiboot_step),     # only with warewulf: grubboot; its fields are optional
]
# A node is published only when every step gave it its fields (publish needs them all).
REQUIRED_FIELDS = ("image", "image_cpio", "kernel", "system", "runtime", "ipxe")


class Context:
    def __init__(self, conf_dir, state_dir, force, log):
        self.conf_dir = conf_dir
        self.state_dir = state_dir
        self.force = force
        self.log = log
        self.settings = settings.load(conf_dir)
        self.nodes = records.read_nodes(layout.nodes_json(state_dir))


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


def run(conf_dir, state_dir, force=False, out=print):
    """Returns the exit code."""
    with locked(layout.build_lock(state_dir), what="another build run"):
        ctx = Context(conf_dir, state_dir, force, out)
        results, errors = [], []
        for name, step in STEPS:
            result = step(ctx)
            for warning in result.warnings:
                out(f"build: warning: {warning}")
            errors += [f"{name}: {e}" for e in result.errors]
            results.append(result)
        if errors:
            for error in errors:
                print(f"build: error: {error}", file=sys.stderr)
            print("build: build.json not updated", file=sys.stderr)
            return 1
        doc, left_out = assemble(results, ctx.nodes)
        if left_out:  # e.g. a node with no image name: it cannot boot, so it is not published
            out(f"build: warning: left out of build.json (incomplete): {', '.join(left_out)}")
        path = layout.build_json(state_dir)
        text = json.dumps(doc, sort_keys=True, indent=1) + "\n"
        try:
            with open(path, encoding="utf-8") as f:
                unchanged = f.read() == text
        except OSError:
            unchanged = False
        if unchanged:
            out(f"build: build.json current ({len(doc['nodes'])} nodes)")
        else:
            atomic_write(path, text)
            out(f"build: wrote {path} ({len(doc['nodes'])} nodes)")
        return 0


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
