"""compress stage: STATE/build/* -> STATE/store/<sha256>.* and STATE/publish/manifest.json.

Compresses every built archive (zstd, and gzip when the settings ask), stores kernels and iPXE scripts,
then commits the manifest atomically. Runs through wwfast.runner (current when build.json, nodes.json,
every build output it read, its settings and code are unchanged and its outputs are in place; says why
it reruns), holding the build lock too so the build cannot change its inputs mid-run. On a terminal it
talks and draws a progress bar; elsewhere (cron) it prints only errors. Exit codes: 0 done or current,
1 error (the published manifest is untouched), 75 another run holds the lock and --no-wait was given.

    python -m stages.compress --conf conf --state var [--no-wait] [--force] [--grace SECONDS]
"""
import argparse
import sys
import time

from wwfast import layout, runner
from wwfast.publish import PublishError, build_outputs, publisher as publish
from wwfast.publish.garbage import GRACE_SECONDS, collect_garbage
from wwfast.define import settings as settings_mod
from wwfast.errors import ConfigError
from wwfast.fsutil import LockBusy
from wwfast.dirs import add_dir_arguments

EXIT_BUSY = 75   # EX_TEMPFAIL: cron may simply try again next time


def _run(ctx):
    started = time.monotonic()
    result = publish.run(ctx.state_dir, ctx.settings, ctx.memory)
    state = "published" if result.changed else "unchanged"
    ctx.log(f"compress: {state} generation {result.generation}: "
            f"{len(result.manifest['nodes'])} nodes, {result.compressed} store files written, "
            f"{result.reused} reused, in {time.monotonic() - started:.2f} s")
    return 0


def _collect_garbage(ctx):
    """Every run, current or not: store files unreferenced for the grace period go, and temp files."""
    retired = ctx.memory.get("retired", {})
    ctx.removed = collect_garbage(ctx.state_dir, ctx.memory.get("store", {}), ctx.memory, ctx.params["grace"])
    return ctx.removed or ctx.memory["retired"] != retired


STAGE = runner.Stage(
    name="compress",
    run=_run,
    inputs=lambda ctx: [layout.build_json(ctx.state_dir)],      # not nodes.json: build.json carries what it needs
    settings=lambda ctx: publish.settings_key(ctx.settings),
    code=("wwfast.publish", "wwfast.records", "wwfast.canonjson", "wwfast.layout", __file__),
    outputs=lambda ctx: [layout.manifest(ctx.state_dir)],
    # every build output it read and every store file it named: stat keys in its memory, checked per item
    check=lambda ctx: build_outputs.stale_items(ctx.state_dir, ctx.memory),
    locks=("build",),            # build's outputs are our inputs: no build runs while we read them
    housekeeping=_collect_garbage,
    version=publish.STAGE_VERSION,
)


def run(conf_dir, state_dir, force=False, wait=True, grace=GRACE_SECONDS, say=print):
    settings = settings_mod.load(conf_dir)
    outcome = runner.run(STAGE, conf_dir, state_dir, settings, force=force, wait=wait, log=say, grace=grace)
    if outcome.code:
        return outcome.code
    removed = outcome.ctx.removed
    generation = outcome.ctx.memory.get("generation")
    if settings.etcd_endpoints and generation:
        # several servers (settings cluster: etcd): the cluster follows once this transaction lands
        from wwfast.cluster import pointer
        try:
            published = pointer.publish_from_settings(settings, state_dir)
        except RuntimeError as e:      # etcd unreachable, or another publish moved the pointer first
            print(f"compress: error: {e}", file=sys.stderr)
            print(f"compress: generation {generation} is published on this server only; "
                  "run compress again to point the cluster at it", file=sys.stderr)
            return 1
        say(f"compress: cluster points at generation {published['generation']}")
    if removed:
        say(f"compress: removed {len(removed)} store files unreferenced for {grace} s")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m stages.compress", description=__doc__.splitlines()[0])
    add_dir_arguments(parser)
    parser.add_argument("--force", action="store_true", help="republish even when current")
    parser.add_argument("--no-wait", action="store_true",
                        help=f"exit {EXIT_BUSY} at once if another run holds the lock (default: wait)")
    parser.add_argument("--grace", type=float, default=GRACE_SECONDS,
                        help="seconds an unreferenced store file is kept for downloads in flight "
                             f"(default {GRACE_SECONDS})")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true", help="talk even when not on a terminal")
    talk.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    verbose = args.verbose or (not args.quiet and sys.stdout.isatty())
    say = print if verbose else (lambda message: None)
    try:
        return run(args.conf, args.state, force=args.force, wait=not args.no_wait, grace=args.grace, say=say)
    except LockBusy as e:
        print(f"compress: {e}; exiting (--no-wait)", file=sys.stderr)
        return EXIT_BUSY
    except (ConfigError, PublishError, OSError) as e:   # OSError: disk full, permissions, ...
        print(f"compress: error: {e}", file=sys.stderr)
        print("compress: the published manifest is unchanged", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
