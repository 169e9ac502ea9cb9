"""`wwfast image exec|shell|copy|rename|delete|syncuser`: change images, each change atomic.

Every one works on a private copy or a rename and swaps trees under the build stage's lock
(wwfast.builder.image_admin), so a failure or a kill leaves the previous image whole.
"""
import argparse

from wwfast.builder import image_admin, image_exec, images, syncuser
from wwfast.commands.entries import confirmer


EXEC_DESCRIPTION = (
    "Run CMD inside image NAME, as root, in its own mount, PID and UTS namespaces: /run is a fresh tmpfs, /proc "
    "a fresh procfs, /sys and /dev the server's, the server's /etc/resolv.conf bound in, plus each --bind. CMD "
    "works on a copy of the image that replaces it only when CMD succeeds (exit 0): a failure, ^C or a kill "
    "leaves the image as it was. Nothing of the mounts stays in the image, and the next build repacks it. "
    "Example: wwfast image exec deb -- apt-get install -y curl")


def register(sub):
    p = sub.add_parser("exec", help="run a command inside an image (its own namespaces; changes kept on success)",
                       description=EXEC_DESCRIPTION)
    _exec_options(p)
    p.add_argument("name", metavar="NAME", help="image name")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("shell", help="an interactive shell inside an image (changes kept unless it is killed)")
    _exec_options(p)
    p.add_argument("name", metavar="NAME", help="image name")
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("copy", aliases=["cp"], help="duplicate an image under a new name")
    p.add_argument("source", metavar="NAME")
    p.add_argument("dest", metavar="NEW")
    p.set_defaults(func=cmd_copy)

    p = sub.add_parser("rename", aliases=["mv"], help="rename an image, and the nodes and profiles naming it")
    p.add_argument("old", metavar="NAME")
    p.add_argument("new", metavar="NEW")
    p.set_defaults(func=cmd_rename)

    p = sub.add_parser("delete", aliases=["rm"], help="delete images (refused while a node or profile uses one)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--force", action="store_true", help="delete even when nodes or profiles still name it")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask (a script is never asked)")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("syncuser", help="align the image's UIDs/GIDs with the server's (Warewulf's rules)",
                       description=syncuser.__doc__.split("\n\n")[1])
    p.add_argument("name", metavar="NAME")
    p.add_argument("--write", choices=["true", "false"], default="true",
                   help="false: only say what would change")
    p.add_argument("--server-etc", metavar="DIR", default="/etc",
                   help="where the server's passwd and group are (default /etc)")
    p.set_defaults(func=cmd_syncuser)


def _exec_options(p):
    p.add_argument("--bind", "-b", action="append", default=[], metavar="SRC[:DST[:ro]]",
                   help="bind a server path into the image for the run (DST defaults to SRC; the mount "
                        "point is removed after); repeatable")
    p.add_argument("--syncuser", action="store_true",
                   help="after the run, align UIDs/GIDs with the server's if it changed passwd or group")


def cmd_exec(args):
    command = list(args.command)
    if "--" in command:   # options given after NAME: `image exec NAME --bind X -- CMD`
        cut = command.index("--")
        opts = argparse.ArgumentParser(prog="wwfast image exec NAME")
        _exec_options(opts)
        extra = opts.parse_args(command[:cut])
        args.bind += extra.bind
        args.syncuser = args.syncuser or extra.syncuser
        command = command[cut + 1:]
    if not command:
        raise images.ImageError("no command given: wwfast image exec NAME -- CMD [ARG ...]")
    return image_exec.run_in_image(args.state, args.name, command, binds=args.bind, syncuser=args.syncuser)


def cmd_shell(args):
    return image_exec.run_in_image(args.state, args.name, None, binds=args.bind, shell=True,
                                   syncuser=args.syncuser)


def cmd_copy(args):
    image_admin.copy(args.state, args.source, args.dest)
    return 0


def cmd_rename(args):
    image_admin.rename(args.state, args.conf, args.old, args.new)
    return 0


def cmd_delete(args):
    ask = confirmer(args.yes)
    for name in args.names:
        images.require_image(args.state, name)
    if not ask(f"delete image(s) {', '.join(args.names)}?"):
        raise images.ImageError("nothing deleted")
    for name in args.names:
        image_admin.delete(args.state, args.conf, name, force=args.force)
    return 0


def cmd_syncuser(args):
    write = args.write == "true"
    if not write:
        root = images.require_image(args.state, args.name)
        syncuser.sync(root, args.server_etc, write=False)
        return 0
    with image_admin.change(args.state, args.name) as ch:
        ch.info["changed"] = images.now_utc()
        syncuser.sync(ch.rootfs, args.server_etc, write=True)
    print(f"image {args.name}: fingerprint {ch.info['fingerprint'][:16]} (the next build repacks it)")
    return 0
