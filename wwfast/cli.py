"""The `wwfast` command: a thin tree over the library; each area adds its subcommands.

Every subcommand takes --conf DIR and --state DIR (defaults conf and var, or
$WWFAST_CONF / $WWFAST_STATE), before or after the subcommand name.
"""
import argparse
import importlib
import os
import sys

from wwfast import __version__
from wwfast.dirs import add_dir_arguments
from wwfast.errors import ConfigError, UsageError
from wwfast.fsutil import LockBusy

# Each module exposes register(subparsers); add a line for a new area.
COMMAND_MODULES = [
    "wwfast.commands.node",
    "wwfast.commands.profile",
    "wwfast.commands.warewulf",
    "wwfast.commands.stages",
    "wwfast.commands.status",
    "wwfast.commands.overlay",
    "wwfast.commands.upgrade",
    "wwfast.commands.image",
    "wwfast.commands.configure",
    "wwfast.commands.cluster",
    "wwfast.commands.power",
]


def _subparsers(parser):
    for action in parser._actions:  # argparse has no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                yield child
                yield from _subparsers(child)


def build_parser():
    parser = argparse.ArgumentParser(prog="wwfast", description="Stateless cluster provisioning.")
    parser.add_argument("--version", action="version", version=f"wwfast {__version__}")
    add_dir_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for child in _subparsers(parser):
        add_dir_arguments(child, default=False)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    from wwfast.commands import stages
    verb = stages.split_stage_argv(argv)
    if verb is not None:       # a stage: its own parser and output, nothing else of the command tree loaded
        try:
            return stages.run(*verb)
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as e:
        print(f"wwfast: error: {e}", file=sys.stderr)
        return 1
    except (UsageError, LockBusy, FileNotFoundError) as e:
        print(f"wwfast: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `wwfast node list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
