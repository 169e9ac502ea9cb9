"""The two directories every stage and every `wwfast` command takes: --conf and --state.

Here, not in the command tree, so the stages (stages/*.py, installed as wwfast.stages) stand on the library.
"""
import argparse
import os


def default_conf():
    return os.environ.get("WWFAST_CONF", "conf")


def default_state():
    return os.environ.get("WWFAST_STATE", "var")


def add_dir_arguments(parser, default=True):
    """--conf/--state with their defaults ($WWFAST_CONF/$WWFAST_STATE, else conf/var), for the `wwfast`
    command and every stage. Subcommands get them with SUPPRESS so they never undo the global value."""
    try:
        parser.add_argument("--conf", metavar="DIR", help="configuration directory (default: conf, $WWFAST_CONF)",
                            default=default_conf() if default else argparse.SUPPRESS)
        parser.add_argument("--state", metavar="DIR", help="state directory (default: var, $WWFAST_STATE)",
                            default=default_state() if default else argparse.SUPPRESS)
    except argparse.ArgumentError:  # the module defined them itself
        pass
