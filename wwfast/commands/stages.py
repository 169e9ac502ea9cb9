"""`wwfast define|build|compress|serve|all`: the pipeline's stages, the same files as `python -m stages.X`
(installed as wwfast.stages), with the same flags and output. The only place the command tree imports them.

Their argument parsers are the stages' own, so `wwfast build ARGS` hands ARGS to `stages/build.py`'s main
unparsed (`cli.main` does this before building the command tree: a stage run imports no other command).
"""
import argparse
import importlib
import sys

from wwfast import fsutil, layout
from wwfast.dirs import add_dir_arguments

STAGES = {
    "define": "resolve the node file into STATE/define/nodes.json",
    "build": "build images, overlays and boot scripts into STATE/build/",
    "compress": "publish the build: the store and STATE/publish/manifest.json",
    "serve": "serve the published manifest to nodes over HTTP and TFTP (foreground)",
    "all": "define, build and compress in turn, one run at a time (as `make all`)",
}
EXIT_BUSY = 75


def stage_module(name):
    """The stage file: wwfast.stages.X when installed, or the checkout's stages.X."""
    try:
        return importlib.import_module(f"wwfast.stages.{name}")
    except ModuleNotFoundError as e:
        if e.name not in ("wwfast.stages", f"wwfast.stages.{name}"):
            raise
        return importlib.import_module(f"stages.{name}")


def register(subparsers):
    """For `wwfast --help` only: the stage verbs never reach the command tree's parser."""
    for name, text in STAGES.items():
        subparsers.add_parser(name, help=text, add_help=False)


def run(name, argv):
    """Exit code of `wwfast NAME ARGV` (ARGV holds the global --conf/--state too)."""
    if name == "all":
        return run_all(argv)
    return stage_module(name).main(argv)


def run_all(argv):
    parser = argparse.ArgumentParser(prog="wwfast all", description=STAGES["all"])
    add_dir_arguments(parser)
    parser.add_argument("--force", action="store_true", help="rerun every stage even when current")
    parser.add_argument("--no-wait", action="store_true",
                        help=f"exit {EXIT_BUSY} at once if another run holds the lock (default: wait)")
    parser.add_argument("--allow-shrink", action="store_true", help="let define drop more than half of the nodes")
    args = parser.parse_args(argv)
    dirs = ["--conf", args.conf, "--state", args.state] + (["--force"] if args.force else [])
    try:
        # the lock `make all` holds: cron's make and a person's wwfast never interleave
        with fsutil.locked(layout.all_lock(args.state), wait=not args.no_wait, what="another `all` run"):
            for name, extra in (("define", ["--allow-shrink"] if args.allow_shrink else []), ("build", []),
                                ("compress", ["--no-wait"] if args.no_wait else [])):
                code = stage_module(name).main(dirs + extra)
                if code:
                    return code
    except fsutil.LockBusy as e:
        print(f"wwfast all: {e}; exiting (--no-wait)", file=sys.stderr)
        return EXIT_BUSY
    return 0


def split_stage_argv(argv):
    """(verb, the rest with the global --conf/--state) when `argv` names a stage verb, else None."""
    front = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("--conf", "--state") and i + 1 < len(argv):
            front += argv[i:i + 2]
            i += 2
        elif token.startswith(("--conf=", "--state=")):
            front.append(token)
            i += 1
        elif token in STAGES:
            return token, front + argv[i + 1:]
        else:
            return None
    return None
