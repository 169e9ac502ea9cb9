"""define stage: conf/nodes.yaml (or nodes.conf) -> STATE/define/nodes.json.

Every node with its profiles merged and hostlists expanded, canonical and
sorted, written atomically. Skips with a reason when its inputs (node file,
code, image and overlay names) are unchanged. On any error: a message naming
file, line and field, exit 1, nothing written. A run that would drop every node of
the previous nodes.json, or more than half of them, is refused (exit 1, nothing
written) unless --allow-shrink says it is meant.

    python -m stages.define --conf conf --state var [--force] [--allow-shrink]
"""
import argparse
import contextlib
import glob
import json
import os
import sys
import time

import hashlib

from wwfast import __version__, layout, records
from wwfast.build import inventory
from wwfast.configure.plan import range_warnings
from wwfast.define import nodes, settings, shrink
from wwfast.errors import ConfigError
from wwfast.fsutil import sha256_file
from wwfast.fsutil import LockBusy, atomic_write, locked
from wwfast.cli import add_dir_arguments

DESCRIBE = {
    "nodes file": "the node file is a different file",
    "nodes digest": "the node file changed",
    "code": "the define code changed",
    "images": "the imported images changed",
    "overlays": "the available overlays changed",
    "format": "the output format changed",
    "dhcp range": "the DHCP range or the server's address changed",
}


def dhcp_range_key(conf):
    """The settings the DHCP range check reads (the define stage warns about the range)."""
    return [conf.address, conf.netmask, conf.dhcp_range_start, conf.dhcp_range_end]


_CODE_MODULES = ("define/nodes", "define/merge", "define/schema", "define/yamlfile", "define/hostlist", "errors",
                 "records")


def code_version():
    """sha256 over the source of the modules that shape nodes.json."""
    h = hashlib.sha256(__version__.encode())
    here = os.path.dirname(os.path.abspath(nodes.__file__))
    for name in _CODE_MODULES:
        with open(os.path.join(os.path.dirname(here), name + ".py"), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def inputs_fingerprint(conf_dir, state_dir, images, overlays):
    """What the define stage reads: the node file's digest, the code, and the image/overlay names."""
    path = nodes.nodes_file(conf_dir)
    return {
        "format": nodes.DB_FORMAT,
        "nodes file": os.path.abspath(path),
        "nodes digest": sha256_file(path) if os.path.exists(path) else "",
        "code": code_version(),
        "images": images,
        "overlays": overlays,
    }


def why_rerun(state_dir, fingerprint):
    """None when the output is current, else the reason to run."""
    inputs_path = os.path.join(layout.define_dir(state_dir), "inputs.json")
    if not os.path.exists(nodes.db_path(state_dir)):
        return "no nodes.json yet"
    try:
        with open(inputs_path) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return "no record of the previous run's inputs"
    changed = [DESCRIBE.get(k, k) for k in fingerprint if previous.get(k) != fingerprint[k]]
    return ", ".join(changed) if changed else None


def _remove_stale_temp_files(out_dir):
    """Temp files a killed run left (fsutil's `.NAME.*.tmp`); under the lock no other run is writing."""
    for name in ("nodes.json", "inputs.json"):
        for path in glob.glob(os.path.join(glob.escape(out_dir), f".{name}.*.tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def run(conf_dir, state_dir, force=False, out=print, allow_shrink=False):
    """Returns the exit code."""
    out_dir = layout.define_dir(state_dir)
    with locked(os.path.join(out_dir, ".lock"), what="another define run"):
        _remove_stale_temp_files(out_dir)
        images, overlays = inventory.image_names(state_dir), inventory.overlay_names(conf_dir)
        conf = settings.load(conf_dir)
        fingerprint = dict(inputs_fingerprint(conf_dir, state_dir, images, overlays),
                           **{"dhcp range": dhcp_range_key(conf)})
        reason = "forced" if force else why_rerun(state_dir, fingerprint)
        if reason is None:
            out("define: current (inputs unchanged)")
            return 0
        out(f"define: running ({reason})")
        started = time.monotonic()
        warnings = []
        resolved = nodes.define(conf_dir, images, overlays, warnings)
        db = nodes.db_path(state_dir)
        shrink.check(shrink.previous_ids(db), resolved, db, allow=allow_shrink)
        if conf.dhcp_range_start:
            warnings += range_warnings(conf, {nid: records.Node.from_json(n) for nid, n in resolved.items()})
        for warning in warnings:
            out(f"define: warning: {warning}")
        path = nodes.write_db(state_dir, resolved)
        # Recorded after nodes.json: a crash in between only causes one extra rerun.
        atomic_write(os.path.join(out_dir, "inputs.json"),
                     json.dumps(fingerprint, sort_keys=True, indent=1) + "\n")
        out(f"define: wrote {len(resolved)} nodes to {path} in {time.monotonic() - started:.2f} s")
        return 0


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
