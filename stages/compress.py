"""compress stage: STATE/build/* -> STATE/store/<sha256>.* and STATE/publish/manifest.json.

Compresses every built archive (zstd, and gzip when the settings ask), stores kernels and iPXE scripts,
then commits the manifest atomically. Skips when current and says why it reruns. On a terminal it
talks and draws a progress bar; elsewhere (cron) it prints only errors. Exit codes: 0 done or current,
1 error (the published manifest is untouched), 75 another run holds the lock and --no-wait was given.

    python -m stages.compress --conf conf --state var [--no-wait] [--force] [--grace SECONDS]
"""
import argparse
import sys
import time

from wwfast.publish import publisher as publish
from wwfast.define import settings as settings_mod
from wwfast.errors import ConfigError
from wwfast.fsutil import LockBusy
from wwfast.cli import add_dir_arguments

EXIT_BUSY = 75   # EX_TEMPFAIL: cron may simply try again next time


def run(conf_dir, state_dir, force=False, wait=True, grace=publish.GRACE_SECONDS, say=print):
    settings = settings_mod.load(conf_dir)
    started = time.monotonic()
    with publish.lock(state_dir, wait=wait, on_wait=lambda m: say(f"compress: {m}")):
        result = publish.run(state_dir, settings, force=force, grace=grace)
    if not result.reasons:
        say(f"compress: current (generation {result.generation})")
    else:
        say(f"compress: ran because {'; '.join(result.reasons)}")
        state = "published" if result.changed else "unchanged"
        say(f"compress: {state} generation {result.generation}: "
            f"{len(result.manifest['nodes'])} nodes, {result.compressed} store files written, "
            f"{result.reused} reused, in {time.monotonic() - started:.2f} s")
    if settings.etcd_endpoints and result.generation:
        # several servers (settings cluster: etcd): the cluster follows once this transaction lands
        from wwfast.cluster import pointer
        try:
            published = pointer.publish_from_settings(settings, state_dir)
        except RuntimeError as e:      # etcd unreachable, or another publish moved the pointer first
            print(f"compress: error: {e}", file=sys.stderr)
            print(f"compress: generation {result.generation} is published on this server only; "
                  "run compress again to point the cluster at it", file=sys.stderr)
            return 1
        say(f"compress: cluster points at generation {published['generation']}")
    if result.removed:
        say(f"compress: removed {len(result.removed)} store files unreferenced for {grace} s")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m stages.compress", description=__doc__.splitlines()[0])
    add_dir_arguments(parser)
    parser.add_argument("--force", action="store_true", help="republish even when current")
    parser.add_argument("--no-wait", action="store_true",
                        help=f"exit {EXIT_BUSY} at once if another run holds the lock (default: wait)")
    parser.add_argument("--grace", type=float, default=publish.GRACE_SECONDS,
                        help="seconds an unreferenced store file is kept for downloads in flight "
                             f"(default {publish.GRACE_SECONDS})")
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
    except (ConfigError, publish.PublishError, OSError) as e:   # OSError: disk full, permissions, ...
        print(f"compress: error: {e}", file=sys.stderr)
        print("compress: the published manifest is unchanged", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
