"""`node edit|export|import` and `profile edit`: whole entries as YAML (wwfast.define.entryedit);
the confirmation that `node set`/`profile set`/`node import` ask before writing."""
import argparse
import sys

from wwfast.commands.fields import known_names
from wwfast.define import entryedit
from wwfast.errors import UsageError

EDIT_EXAMPLE = """\
The entries open in $EDITOR (else $VISUAL, else vi) as a node-file fragment. On save the whole node file
is checked as the define stage checks it; a problem is shown at its line in the fragment and the
fragment is offered again. Removing an entry deletes it; adding one adds it.

example:
  EDITOR=nano wwfast {what} edit {example}
"""
EXPORT_EXAMPLE = """\
examples:
  wwfast node export 'n[01-04]' > rack1.yaml      # the entries as written, passwords included
  wwfast node import rack1.yaml --yes              # add or replace them (here or on another server)
"""


def ask(question):
    """y/N from stdin (a pipe works too); end of input means no."""
    print(f"{question} [y/N] ", end="", flush=True, file=sys.stderr)
    try:
        answer = input()
    except EOFError:
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in ("y", "yes")


def confirmer(yes):
    """What set/import use: ask on a terminal unless --yes; a script (no terminal) is never asked."""
    if yes or not sys.stdin.isatty():
        return lambda question: True
    return ask


def register_node(sub):
    p = sub.add_parser("edit", help="edit nodes as YAML in $EDITOR", epilog=EDIT_EXAMPLE.format(
        what="node", example="'n[01-04]'"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="nodes (hostlists, globs); default: all")
    p.set_defaults(func=cmd_edit, section="nodes")
    p = sub.add_parser("export", help="print nodes as written in the node file (YAML)", epilog=EXPORT_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="nodes (hostlists, globs); default: all")
    p.set_defaults(func=cmd_export, section="nodes")
    p = sub.add_parser("import", help="add or replace nodes (and profiles) from a YAML file",
                       epilog=EXPORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="node-file shaped YAML (as node export prints); - for stdin")
    p.add_argument("-y", "--yes", action="store_true", help="write without asking")
    p.set_defaults(func=cmd_import)


def register_profile(sub):
    p = sub.add_parser("edit", help="edit profiles as YAML in $EDITOR", epilog=EDIT_EXAMPLE.format(
        what="profile", example="default"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patterns", nargs="*", metavar="PROFILE", help="profiles (names, globs); default: all")
    p.set_defaults(func=cmd_edit, section="nodeprofiles")


def cmd_edit(args):
    changed = entryedit.edit_entries(args.conf, args.section, args.patterns, ask, known_names(args),
                                     log=lambda text: print(text, file=sys.stderr))
    for line in changed:
        print(line)
    if changed:
        print(f"{len(changed)} change{'s' if len(changed) != 1 else ''} written")
    return 0


def cmd_export(args):
    sys.stdout.write(entryedit.export_text(args.conf, args.section, args.patterns))
    return 0


def cmd_import(args):
    if args.file == "-":
        text, path = sys.stdin.read(), "<stdin>"
        confirm = (lambda question: True) if args.yes else None
        if confirm is None:
            raise UsageError("node import -: stdin holds the entries, so answer with --yes")
    else:
        path = args.file
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"{path}: {e.strerror}") from None
        confirm = confirmer(args.yes)
    done = entryedit.import_entries(args.conf, text, path, confirm, known_names(args))
    for section, names in done.items():
        what = entryedit.WHAT[section]
        print(f"imported {len(names)} {what}{'s' if len(names) != 1 else ''}: {', '.join(names)}")
    return 0
