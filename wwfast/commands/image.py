"""`wwfast image import|list|kernels|exec|shell`: bring OS images in, see what they hold, change them."""
import argparse
import getpass
import sys

from wwfast.build import image_exec, images, kernels, registry
from wwfast.commands.listing import print_json, print_table


def register(subparsers):
    image = subparsers.add_parser("image", help="import and list OS images (the nodes' root trees)")
    sub = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)

    p = sub.add_parser("import", help="import a directory, tarball, OCI layout, docker save archive, or pull "
                                      "docker://REGISTRY/NAME:TAG")
    p.add_argument("source", metavar="SOURCE",
                   help="a directory (chroot), .tar/.tar.gz/.tar.zst, OCI image layout (dir or tar), "
                        "a `docker save` archive, docker://REGISTRY/NAME:TAG or docker-daemon:NAME:TAG")
    p.add_argument("name", metavar="NAME", nargs="?",
                   help="image name (for a pull: the reference's last component and tag by default)")
    p.add_argument("--update", action="store_true", help="re-import over an existing image")
    pull = p.add_argument_group("pulling from a registry (skopeo does the transfer)")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                      help="the image to take from a multi-platform index (default: this machine's)")
    pull.add_argument("--username", help="registry user (the password: --password, else asked, else read "
                                         "from standard input)")
    pull.add_argument("--password", help="registry password")
    pull.add_argument("--authfile", metavar="FILE", help="credentials file (default: podman's "
                      "${XDG_RUNTIME_DIR}/containers/auth.json, then ~/.docker/config.json)")
    pull.add_argument("--cert-dir", metavar="DIR", help="CA certificates (*.crt) to trust for the registry")
    pull.add_argument("--tls-verify", choices=["true", "false"], default="true",
                      help="false: plain HTTP or an unverified certificate")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("list", aliases=["ls"], help="show imported images")
    p.add_argument("-j", "--json", action="store_true", help="image.json of every image")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("kernels", help="kernels found in images (Warewulf's search order)")
    p.add_argument("names", nargs="*", metavar="NAME", help="images (default: all)")
    p.set_defaults(func=cmd_kernels)

    p = sub.add_parser("exec", help="run a command inside an image (its own namespaces; changes kept on success)",
                       description=image_exec.__doc__.split("\n\n")[1].replace("\n", " "))
    _exec_options(p)
    p.add_argument("name", metavar="NAME", help="image name")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("shell", help="an interactive shell inside an image (changes kept unless it is killed)")
    _exec_options(p)
    p.add_argument("name", metavar="NAME", help="image name")
    p.set_defaults(func=cmd_shell)


def _exec_options(p):
    p.add_argument("--bind", "-b", action="append", default=[], metavar="SRC[:DST[:ro]]",
                   help="bind a server path into the image for the run (DST defaults to SRC; the mount "
                        "point is removed after); repeatable")


def cmd_exec(args):
    command = list(args.command)
    if "--" in command:   # options given after NAME: `image exec NAME --bind X -- CMD`
        cut = command.index("--")
        opts = argparse.ArgumentParser(prog="wwfast image exec NAME")
        _exec_options(opts)
        args.bind += opts.parse_args(command[:cut]).bind
        command = command[cut + 1:]
    if not command:
        raise images.ImageError("no command given: wwfast image exec NAME -- CMD [ARG ...]")
    return image_exec.run_in_image(args.state, args.name, command, binds=args.bind)


def cmd_shell(args):
    return image_exec.run_in_image(args.state, args.name, None, binds=args.bind, shell=True)


def cmd_import(args):
    options = None
    name = args.name
    if registry.is_remote(args.source):
        password = args.password
        if args.username and password is None:
            password = getpass.getpass(f"password for {args.username}: ") if sys.stdin.isatty() \
                else sys.stdin.readline().rstrip("\n")
        if args.platform:
            registry.parse_platform(args.platform)
        options = registry.PullOptions(username=args.username, password=password, authfile=args.authfile,
                                       platform=args.platform, cert_dir=args.cert_dir,
                                       tls_verify=args.tls_verify == "true")
        name = name or registry.default_name(args.source)
    elif name is None:
        raise images.ImageError(f"{args.source}: give the image name: wwfast image import SOURCE NAME")
    images.import_image(args.source, name, args.state, update=args.update, pull=options)
    return 0


def cmd_list(args):
    names = images.list_images(args.state)
    infos = {n: images.load_info(args.state, n) for n in names}
    if args.json:
        print_json(infos)
        return 0
    rows = []
    for name in names:
        info = infos[name]
        try:
            kernel = kernels.select_kernel(images.image_root(args.state, name)).version or "(unversioned)"
        except kernels.KernelError:
            kernel = "none"
        rows.append([name, kernel, info.get("entries"), _size(info.get("bytes")), info.get("imported"),
                     info.get("source")])
    print_table(["IMAGE", "KERNEL", "ENTRIES", "SIZE", "IMPORTED", "SOURCE"], rows)
    return 0


def cmd_kernels(args):
    names = args.names or images.list_images(args.state)
    rows = []
    for name in names:
        root = images.require_image(args.state, name)
        found = kernels.find_kernels(root)
        default = kernels.default_kernel(found)
        for k in found:
            flags = ",".join(f for f, on in (("default", k == default), ("debug", k.is_debug),
                                             ("rescue", k.is_rescue)) if on)
            rows.append([name, k.path, k.version, flags])
        if not found:
            rows.append([name, "(none)", "", ""])
    print_table(["IMAGE", "KERNEL", "VERSION", "FLAGS"], rows)
    return 0


def _size(n):
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024

