"""`wwfast upgrade nodes`: convert an old Warewulf node file (before 4.6), keeping its comments.

    wwfast upgrade nodes [-i IN] [-o OUT] [--add-defaults] [--replace-overlays]

Default input is the conf dir's node file; the output replaces it (the old text kept beside it with
an -old suffix, as Warewulf does) unless -o names another file. The result is checked as the define
stage checks it before anything is written.
"""
import os
import shutil

from wwfast.define import nodefile, nodes
from wwfast.define.nodeedit import lock_path
from wwfast.define.upgrade import upgrade_text
from wwfast.define.yamlfile import read_text
from wwfast.errors import UsageError
from wwfast.fsutil import atomic_write, locked


def register(subparsers):
    p = subparsers.add_parser("upgrade", help="convert files from older Warewulf versions")
    sub = p.add_subparsers(dest="upgrade_command", metavar="WHAT", required=True)
    n = sub.add_parser("nodes", help="convert a node file from before Warewulf 4.6 (comments kept)")
    n.add_argument("-i", "--input-file", help="the node file to read (default: the conf dir's)")
    n.add_argument("-o", "--output-file", help="where to write (default: replace the input, keeping INPUT-old)")
    n.add_argument("--add-defaults", action="store_true", help="complete the default profile as Warewulf's")
    n.add_argument("--replace-overlays", action="store_true",
                   help="replace the old wwinit and generic overlays by the ones they were split into")
    n.set_defaults(func=cmd_nodes)


def cmd_nodes(args):
    src = args.input_file or nodefile.nodes_file(args.conf)
    if not os.path.exists(src):
        raise UsageError(f"{src} does not exist")
    dst = args.output_file or src
    with locked(lock_path(os.path.dirname(os.path.abspath(dst)) or "."), what="another node file edit"):
        text = read_text(src)
        new_text, notes = upgrade_text(text, args.add_defaults, args.replace_overlays)
        nodes.resolve(nodefile.parse_config(new_text, dst))  # as define checks it; nothing written on error
        if os.path.abspath(dst) == os.path.abspath(src) and new_text != text:
            shutil.copy2(src, src + "-old")
        atomic_write(dst, new_text)
    for note in notes:
        print(f"  {note}")
    print(f"upgraded {src} -> {dst} ({len(notes)} change(s))" + (f"; the old file is {src}-old" if dst == src and notes else ""))
    return 0
