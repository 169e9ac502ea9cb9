"""`wwfast import-warewulf DIR`: take over a Warewulf warewulf.conf and nodes.conf unchanged.

wwfast reads both files as they are, so `--conf /etc/warewulf` works directly;
this command copies them byte for byte into the conf dir as wwfast.yaml and
nodes.yaml (after checking them), so later `wwfast node ...` edits never touch
the Warewulf originals.
"""
import os

from wwfast.define import nodes, settings
from wwfast.errors import UsageError
from wwfast.fsutil import atomic_write, locked
from wwfast.define.nodeedit import lock_path

COPIES = (("warewulf.conf", "wwfast.yaml"), ("nodes.conf", "nodes.yaml"))


def register(subparsers):
    p = subparsers.add_parser("import-warewulf", help="copy a Warewulf warewulf.conf and nodes.conf into --conf")
    p.add_argument("source", metavar="DIR", help="directory holding warewulf.conf and/or nodes.conf (/etc/warewulf)")
    p.add_argument("-f", "--force", action="store_true", help="replace existing wwfast.yaml / nodes.yaml")
    p.set_defaults(func=cmd_import)


def cmd_import(args):
    found = [(src, dst) for src, dst in COPIES if os.path.exists(os.path.join(args.source, src))]
    if not found:
        raise UsageError(f"{args.source} holds neither warewulf.conf nor nodes.conf")
    if os.path.abspath(args.source) == os.path.abspath(args.conf):
        raise UsageError("the source is the conf dir itself: nothing to import (it is read in place)")
    with open(os.path.join(args.source, found[0][0]), "rb"):
        pass
    settings.load(args.source)          # both files checked before anything is copied
    nodes.resolve(nodes.read_config(args.source))
    os.makedirs(args.conf, exist_ok=True)
    with locked(lock_path(args.conf), what="another node file edit"):
        for src, dst in found:
            target = os.path.join(args.conf, dst)
            if os.path.exists(target) and not args.force:
                raise UsageError(f"{target} exists; use --force to replace it")
        for src, dst in found:
            with open(os.path.join(args.source, src), "rb") as f:
                atomic_write(os.path.join(args.conf, dst), f.read())
            print(f"imported {os.path.join(args.source, src)} -> {os.path.join(args.conf, dst)}")
    return 0
