"""`wwfast overlay create|delete|edit|import|mkdir|chmod|chown|info`: change site overlays, as wwctl does.

Built-in overlays are copied into the site (CONF/overlays/NAME) before their first change, with a
message. `edit` opens $EDITOR on a temp copy and saves it atomically (a template with a syntax error
is shown at its line and offered again); `info` lists the template variables a file uses.
"""
import argparse
import os
import pathlib
import sys
import tempfile

from wwfast.builder import overlay_edit as oe
from wwfast.builder import overlays
from wwfast.commands.entries import ask
from wwfast.editor import run_editor
from wwfast.errors import ConfigError, UsageError

EXAMPLES = {
    "create": "wwfast overlay create site-motd",
    "delete": "wwfast overlay delete site-motd etc/motd --parents    # or the whole overlay: delete site-motd --force",
    "edit": "wwfast overlay edit site-motd etc/motd.j2 --parents --mode 0644",
    "import": "wwfast overlay import site-motd /etc/motd etc/motd --parents",
    "mkdir": "wwfast overlay mkdir site-motd etc/profile.d --mode 0755",
    "chmod": "wwfast overlay chmod site-motd etc/motd 0644",
    "chown": "wwfast overlay chown site-motd etc/motd 0 0",
    "info": "wwfast overlay info wwinit wwinit/config.j2",
}


def _parser(sub, name, help_text):
    p = sub.add_parser(name, help=help_text, epilog=f"example:\n  {EXAMPLES[name]}\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overlay", metavar="NAME")
    return p


def register(sub):
    p = _parser(sub, "create", "create an empty site overlay")
    p.set_defaults(func=cmd_create)
    p = _parser(sub, "delete", "delete a site overlay, or files in it")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("-f", "--force", action="store_true", help="delete a non-empty overlay or directory, or one in use")
    p.add_argument("-p", "--parents", action="store_true", help="also remove parent directories left empty")
    p.set_defaults(func=cmd_delete)
    p = _parser(sub, "edit", "edit a file of an overlay in $EDITOR")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-p", "--parents", action="store_true", help="create missing parent directories")
    p.add_argument("-m", "--mode", default="0644", help="mode of a new file (default 0644)")
    p.set_defaults(func=cmd_edit)
    p = _parser(sub, "import", "copy a file of this server into an overlay")
    p.add_argument("source", metavar="FILE")
    p.add_argument("target", nargs="?", metavar="NEWNAME", help="path in the overlay (default: FILE's path)")
    p.add_argument("-o", "--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("-p", "--parents", action="store_true", help="create missing parent directories")
    p.set_defaults(func=cmd_import)
    p = _parser(sub, "mkdir", "make a directory in an overlay")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("-m", "--mode", default="0755", help="its mode (default 0755)")
    p.set_defaults(func=cmd_mkdir)
    p = _parser(sub, "chmod", "change the mode of a file in an overlay")
    p.add_argument("file", metavar="FILE")
    p.add_argument("mode", metavar="MODE")
    p.set_defaults(func=cmd_chmod)
    p = _parser(sub, "chown", "change the owner of a file in an overlay (numeric ids)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("uid", metavar="UID")
    p.add_argument("gid", nargs="?", metavar="GID")
    p.set_defaults(func=cmd_chown)
    p = _parser(sub, "info", "list the template variables and functions a file uses")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_info)


def _log(text):
    print(text, file=sys.stderr)


def cmd_create(args):
    with oe.lock(args.conf):
        path = oe.create(args.conf, args.overlay)
    print(f"created overlay {args.overlay} ({path})")
    return 0


def cmd_delete(args):
    with oe.lock(args.conf):
        removed = oe.delete(args.conf, args.overlay, args.files, force=args.force, parents=args.parents)
    for item in removed:
        print(f"deleted {item}" if args.files else f"deleted overlay {args.overlay} ({item})")
    return 0


def _tree(args):
    with oe.lock(args.conf):
        return oe.site_tree(args.conf, args.overlay, log=_log)


def cmd_edit(args):
    tree = _tree(args)
    path = oe.existing(tree, args.file)
    existed = path.exists()
    original = path.read_bytes() if existed else b""
    mode = oe._mode(args.mode)
    with tempfile.TemporaryDirectory(prefix="wwfast-overlay-edit.") as tmp:
        copy = pathlib.Path(tmp) / path.name  # same name: the editor picks its syntax from it
        copy.write_bytes(original)
        while True:
            run_editor(copy)
            data = copy.read_bytes()
            if existed and data == original:
                print(f"{args.overlay}:{args.file}: no change")
                return 0
            try:
                if path.name.endswith(overlays.TEMPLATE_SUFFIX):
                    oe.check_template(path, data.decode("utf-8"))
                break
            except (ConfigError, UnicodeDecodeError) as e:
                _log(str(e))
                if not ask("Edit again?"):
                    raise UsageError(f"nothing written to {path}") from None
        with oe.lock(args.conf):
            now = path.read_bytes() if path.exists() else None
            if now != (original if existed else None):
                raise UsageError(f"{path} changed while it was being edited: nothing written")
            oe.write_file(path, data, None if existed else mode, args.parents, args.file)
    print(f"saved {path}")
    return 0


def _change(args, action, done):
    """Run `action(site tree)` under the overlay lock and print `done(path)`."""
    tree = _tree(args)
    with oe.lock(args.conf):
        path = action(tree)
    print(done(path))
    return 0


def cmd_mkdir(args):
    return _change(args, lambda tree: oe.mkdir(tree, args.dir, args.mode), lambda path: f"created {path}")


def cmd_chmod(args):
    return _change(args, lambda tree: oe.chmod(tree, args.file, args.mode), lambda path: f"{path}: mode {args.mode}")


def cmd_chown(args):
    owner = f"{args.uid}{':' + args.gid if args.gid else ''}"
    return _change(args, lambda tree: oe.chown(tree, args.file, args.uid, args.gid),
                   lambda path: f"{path}: owner {owner}")


def cmd_import(args):
    target = args.target or args.source
    return _change(args, lambda tree: oe.import_file(tree, args.source, target, overwrite=args.overwrite,
                                                       parents=args.parents),
                   lambda path: f"imported {args.source} as {path}")


def cmd_info(args):
    tree = overlays.overlay_tree(args.conf, args.overlay)  # reading needs no site copy
    path = oe.existing(tree, args.file)
    if not path.is_file():
        raise UsageError(f"overlay {args.overlay!r} has no file {args.file!r}")
    if not path.name.endswith(overlays.TEMPLATE_SUFFIX):
        print(f"{args.overlay}:{args.file} is not a template (no {overlays.TEMPLATE_SUFFIX}): no variables")
        return 0
    variables, functions = oe.template_variables(path)
    print(f"{args.overlay}:{os.path.relpath(path, tree)}")
    print("VARIABLES:")
    for name in variables:
        print(f"  {name}")
    print("FUNCTIONS:" if functions else "FUNCTIONS: none")
    for name in functions:
        print(f"  {name}()")
    return 0
