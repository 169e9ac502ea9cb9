"""`wwfast image import|list|kernels|show` (+ the changes in image_change): bring OS images in and see
what they hold."""
import getpass
import json
import os
import sys

from wwfast import layout
from wwfast.builder import image_admin, images, kernels, registry
from wwfast.commands import image_change
from wwfast.errors import ConfigError
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
    p.add_argument("--syncuser", action="store_true",
                   help="align the image's UIDs/GIDs with this server's before installing it (Warewulf's rules)")
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

    p = sub.add_parser("show", help="an image's root path (-a: everything known about it)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-a", "--all", action="store_true", help="source, platform, size, kernels, nodes, build")
    p.add_argument("-j", "--json", action="store_true", help="the same as JSON")
    p.set_defaults(func=cmd_show)

    image_change.register(sub)


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
    images.import_image(args.source, name, args.state, update=args.update, pull=options,
                        syncuser_etc="/etc" if args.syncuser else None)
    return 0


def _usage(args):
    try:
        return image_admin.usage(args.state, args.conf)
    except ConfigError:
        return None     # a broken node file: `define` says where; listing still works


def _built(state_dir, name):
    """The last build's record of the image (archive size, kernel), or None."""
    try:
        with open(os.path.join(layout.build_images_dir(state_dir), f"{name}.meta.json"), "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _default_kernel(root):
    try:
        k = kernels.select_kernel(root)
        return k.version or "(unversioned)", k.path
    except kernels.KernelError:
        return "none", None


def cmd_list(args):
    names = images.list_images(args.state)
    infos = {n: images.load_info(args.state, n) for n in names}
    if args.json:
        print_json(infos)
        return 0
    used = _usage(args)
    rows = []
    for name in names:
        info = infos[name]
        built = _built(args.state, name)
        rows.append([name, _default_kernel(images.image_root(args.state, name))[0], info.get("entries"),
                     _size(info.get("bytes")), _size(built["cpio"]["size"]) if built else "-",
                     "?" if used is None else sum(u.startswith("node ") for u in used.get(name, [])),
                     info.get("changed") or info.get("imported"), info.get("source")])
    print_table(["IMAGE", "KERNEL", "ENTRIES", "SIZE", "BUILT", "NODES", "CHANGED", "SOURCE"], rows)
    return 0


def cmd_show(args):
    root = images.require_image(args.state, args.name)
    if not (args.all or args.json):
        print(os.path.abspath(root))      # as Warewulf: `cd $(wwfast image show NAME)`
        return 0
    info = images.load_info(args.state, args.name)
    found = kernels.find_kernels(root)
    default = kernels.default_kernel(found)
    used = _usage(args)
    built = _built(args.state, args.name)
    doc = {
        "name": args.name, "path": os.path.abspath(root), "source": info.get("source"), "kind": info.get("kind"),
        "platform": info.get("platform"), "manifest": info.get("manifest"), "imported": info.get("imported"),
        "changed": info.get("changed"), "fingerprint": info.get("fingerprint"), "entries": info.get("entries"),
        "bytes": info.get("bytes"),
        "kernel": {"version": default.version, "path": default.path} if default else None,
        "kernels": [{"version": k.version, "path": k.path} for k in found],
        "used_by": None if used is None else used.get(args.name, []),
        "built": {"bytes": built["cpio"]["size"], "kernel": built["kernel"]["version"]} if built else None,
    }
    if args.json:
        print_json(doc)
        return 0
    lines = [("Name", doc["name"]), ("Path", doc["path"]), ("Source", doc["source"]), ("Kind", doc["kind"])]
    if doc["platform"]:
        lines += [("Platform", doc["platform"]), ("Manifest", doc["manifest"])]
    lines += [("Imported", doc["imported"]), ("Changed", doc["changed"] or "-"),
              ("Fingerprint", doc["fingerprint"]), ("Entries", doc["entries"]),
              ("Size", _size(doc["bytes"])),
              ("KernelVersion", default.version if default else "not found"),
              ("Kernels", ", ".join(f"{k.path} ({k.version or '?'})" for k in found) or "none"),
              ("Nodes", "? (the node file does not parse)" if used is None else ", ".join(doc["used_by"]) or "none"),
              ("Built", f"{_size(built['cpio']['size'])}, kernel {built['kernel']['version']}" if built else "not yet")]
    for key, value in lines:
        print(f"{key}: {value}")
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

