"""define stage: conf/nodes.yaml (or nodes.conf) -> STATE/define/nodes.json.

Every node with its profiles merged and hostlists expanded, canonical and
sorted, written atomically. Runs through wwfast.runner: skips with a reason
when its inputs (node file, code, image and overlay names, the DHCP range
settings) are unchanged. On any error: a message naming
file, line and field, exit 1, nothing written. A run that would drop every node of
the previous nodes.json, or more than half of them, is refused (exit 1, nothing
written) unless --allow-shrink says it is meant.

    python -m stages.define --conf conf --state var [--force] [--allow-shrink]
"""
import argparse
import contextlib
import glob
import os
import sys
import time

from wwfast import layout, records, runner
from wwfast.builder import inventory
from wwfast.define import nodefile, nodes, settings, shrink
from wwfast.errors import ConfigError
from wwfast.fsutil import LockBusy
from wwfast.dirs import add_dir_arguments

def dhcp_range_key(conf):
    """The settings the DHCP range check reads (the define stage warns about the range)."""
    return [conf.address, conf.netmask, conf.dhcp_range_start, conf.dhcp_range_end]


# The modules that shape nodes.json (their source is part of the stage's fingerprint).
CODE = ("wwfast.define.nodes", "wwfast.define.nodefile", "wwfast.define.merge", "wwfast.define.schema",
        "wwfast.define.yamlfile", "wwfast.define.hostlist", "wwfast.errors", "wwfast.records")


def _facts(ctx):
    """The names define checks nodes against (computed once per call, kept for the run)."""
    ctx.images, ctx.overlays = inventory.image_names(ctx.state_dir), inventory.overlay_names(ctx.conf_dir)
    return {"the imported images": ctx.images, "the available overlays": ctx.overlays,
            "the node file's format": nodes.DB_FORMAT}


def _remove_stale_temp_files(out_dir):
    """Temp files a killed run left (fsutil's `.NAME.*.tmp`); under the lock no other run is writing."""
    for path in glob.glob(os.path.join(glob.escape(out_dir), ".nodes.json.*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _run(ctx):
    started = time.monotonic()
    _remove_stale_temp_files(layout.define_dir(ctx.state_dir))
    warnings = []
    resolved = nodes.define(ctx.conf_dir, ctx.images, ctx.overlays, warnings)
    db = nodes.db_path(ctx.state_dir)
    shrink.check(shrink.previous_ids(db), resolved, db, allow=ctx.params.get("allow_shrink", False))
    conf = ctx.settings
    if conf.dhcp_range_start:
        from wwfast.configure.plan import range_warnings   # only then: the DHCP planning code is not small
        warnings += range_warnings(conf, {nid: records.Node.from_json(n) for nid, n in resolved.items()})
    for warning in warnings:
        ctx.log(f"define: warning: {warning}")
    path = nodes.write_db(ctx.state_dir, resolved)
    ctx.log(f"define: wrote {len(resolved)} nodes to {path} in {time.monotonic() - started:.2f} s")
    return 0


STAGE = runner.Stage(
    name="define",
    run=_run,
    inputs=lambda ctx: [nodefile.nodes_file(ctx.conf_dir)],
    settings=lambda ctx: {"dhcp range": dhcp_range_key(ctx.settings)},
    facts=_facts,
    code=CODE,
    outputs=lambda ctx: [layout.nodes_json(ctx.state_dir)],
)


def run(conf_dir, state_dir, force=False, out=print, allow_shrink=False):
    """Returns the exit code."""
    conf = settings.load(conf_dir)
    return runner.run(STAGE, conf_dir, state_dir, conf, force=force, log=out, allow_shrink=allow_shrink).code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m stages.define", description=__doc__.splitlines()[0])
    add_dir_arguments(parser)
    parser.add_argument("--force", action="store_true", help="run even when the inputs are unchanged")
    parser.add_argument("--allow-shrink", action="store_true",
                        help="write even when every node, or more than half of them, would go from nodes.json")
    args = parser.parse_args(argv)
    try:
        return run(args.conf, args.state, force=args.force, allow_shrink=args.allow_shrink)
    except shrink.ShrinkRefused as e:
        print(f"define: refused: {e}", file=sys.stderr)
        print("define: nothing written", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"define: error: {e}", file=sys.stderr)
        print("define: nothing written", file=sys.stderr)
        return 1
    except LockBusy as e:
        print(f"define: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # unreadable conf, full disk, read-only state dir, ...
        print(f"define: error: {e}", file=sys.stderr)
        print("define: nothing written", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
