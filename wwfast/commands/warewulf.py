"""`wwfast import-warewulf DIR`: take over a Warewulf server's configuration unchanged.

wwfast reads warewulf.conf and nodes.conf as they are, so `--conf /etc/warewulf` works directly; this
command copies them byte for byte into the conf dir as wwfast.yaml and nodes.yaml (after checking
them), so later `wwfast node ...` edits never touch the Warewulf originals. It also brings the site's
own overlays (Warewulf's `wwoverlaydir`, /var/lib/warewulf/overlays unless warewulf.conf's paths say
otherwise; each copied unchanged, `rootfs/` and all, into CONF/overlays/<name>) and its iPXE templates
(DIR/ipxe/*.ipxe into CONF/ipxe/) and the other files of DIR that templates may Include (a relative
Include resolves under the conf dir as it does under /etc/warewulf in Warewulf), and says what it took
and what it left, and why.
"""
import os
import shutil

from wwfast.define import nodefile, nodes, settings
from wwfast.define.nodeedit import lock_path
from wwfast.define.yamlfile import parse, read_text
from wwfast.errors import UsageError
from wwfast.fsutil import atomic_write, locked

COPIES = (("warewulf.conf", "wwfast.yaml"), ("nodes.conf", "nodes.yaml"))
DEFAULT_OVERLAY_DIR = "/var/lib/warewulf/overlays"
# Overlays and iPXE scripts of Warewulf's that are not taken, and why.
LEFT_OVERLAYS = {"host": "rendered onto the Warewulf server itself (DHCP, TFTP, NFS, hosts): wwfast does not "
                         "configure the server's services"}
STOCK_IPXE = {"default": "Warewulf's stock boot script: wwfast's built-in default.ipxe does the same job over "
                         "wwfast's routes (--all-ipxe takes it anyway)",
              "unconfigured": "Warewulf's stock script for unknown MACs: wwfast's built-in unknown.ipxe does the "
                              "same job (--all-ipxe takes it anyway)"}


def register(subparsers):
    p = subparsers.add_parser("import-warewulf",
                              help="copy a Warewulf server's warewulf.conf, nodes.conf, site overlays and iPXE templates")
    p.add_argument("source", metavar="DIR", help="Warewulf's configuration directory (/etc/warewulf)")
    p.add_argument("--overlays", metavar="DIR",
                   help=f"its site overlays (default: paths: wwoverlaydir of warewulf.conf, else {DEFAULT_OVERLAY_DIR})")
    p.add_argument("--all-ipxe", action="store_true", help="also take Warewulf's stock default/unconfigured iPXE scripts")
    p.add_argument("-f", "--force", action="store_true", help="replace existing files and overlays")
    p.set_defaults(func=cmd_import)


def overlay_dir(source, given=None):
    if given:
        return given
    path = os.path.join(source, "warewulf.conf")
    if os.path.exists(path):
        data = parse(read_text(path), path).data or {}
        configured = ((data.get("paths") or {}) if isinstance(data, dict) else {}).get("wwoverlaydir")
        if configured:
            return str(configured)
    return DEFAULT_OVERLAY_DIR


def cmd_import(args):
    found = [(src, dst) for src, dst in COPIES if os.path.exists(os.path.join(args.source, src))]
    ipxe_dir = os.path.join(args.source, "ipxe")
    ov_dir = overlay_dir(args.source, args.overlays)
    if not found and not os.path.isdir(ipxe_dir) and not os.path.isdir(ov_dir):
        raise UsageError(f"{args.source} holds neither warewulf.conf, nodes.conf nor ipxe/, and there are no "
                         f"overlays in {ov_dir}")
    if os.path.abspath(args.source) == os.path.abspath(args.conf):
        raise UsageError("the source is the conf dir itself: nothing to import (it is read in place)")
    if any(s == "warewulf.conf" for s, _ in found):
        settings.load(args.source)          # both files checked before anything is copied
    if any(s == "nodes.conf" for s, _ in found):
        nodes.resolve(nodefile.read_config(args.source))
    os.makedirs(args.conf, exist_ok=True)
    took, left = [], []
    with locked(lock_path(args.conf), what="another node file edit"):
        for src, dst in found:
            target = os.path.join(args.conf, dst)
            if os.path.exists(target) and not args.force:
                raise UsageError(f"{target} exists; use --force to replace it")
        for src, dst in found:
            with open(os.path.join(args.source, src), "rb") as f:
                atomic_write(os.path.join(args.conf, dst), f.read())
            took.append(f"{os.path.join(args.source, src)} -> {os.path.join(args.conf, dst)}")
    _import_overlays(ov_dir, args, took, left)
    _import_ipxe(ipxe_dir, args, took, left)
    _import_other(args, took, left)
    for line in took:
        print(f"imported {line}")
    for line in left:
        print(f"left {line}")
    return 0


def _import_overlays(src_dir, args, took, left):
    if not os.path.isdir(src_dir):
        left.append(f"site overlays: {src_dir} does not exist")
        return
    dest_root = os.path.join(args.conf, "overlays")
    for name in sorted(os.listdir(src_dir)):
        src = os.path.join(src_dir, name)
        if not os.path.isdir(src):
            continue
        if name in LEFT_OVERLAYS:
            left.append(f"overlay {name}: {LEFT_OVERLAYS[name]}")
            continue
        dest = os.path.join(dest_root, name)
        if os.path.lexists(dest) and not args.force:
            left.append(f"overlay {name}: {dest} exists (--force replaces it)")
            continue
        _copy_tree(src, dest)
        files = templates = 0
        for _, _, names in os.walk(dest):
            files += len(names)
            templates += sum(n.endswith(".ww") for n in names)
        took.append(f"overlay {name}: {src} -> {dest} ({files} files, {templates} .ww templates)")


def _import_ipxe(src_dir, args, took, left):
    if not os.path.isdir(src_dir):
        return
    dest_dir = os.path.join(args.conf, "ipxe")
    for name in sorted(os.listdir(src_dir)):
        if not name.endswith(".ipxe"):
            continue
        stem = name[: -len(".ipxe")]
        if stem in STOCK_IPXE and not args.all_ipxe:
            left.append(f"iPXE template {name}: {STOCK_IPXE[stem]}")
            continue
        dest = os.path.join(dest_dir, name)
        if os.path.exists(dest) and not args.force:
            left.append(f"iPXE template {name}: {dest} exists (--force replaces it)")
            continue
        os.makedirs(dest_dir, exist_ok=True)
        with open(os.path.join(src_dir, name), "rb") as f:
            atomic_write(dest, f.read())
        took.append(f"iPXE template {os.path.join(src_dir, name)} -> {dest}")


# Entries of DIR handled above or of no use to wwfast.
HANDLED = {"warewulf.conf", "nodes.conf", "ipxe", "wwfast.yaml", "nodes.yaml", "overlays"}
NOT_TAKEN = {"grub": "GRUB boot configuration: wwfast boots nodes through iPXE",
             "examples": "Warewulf's example host templates (slurm.conf.ww, ...), for its host overlay"}


def _import_other(args, took, left):
    """Files beside the configuration (keys/, a banner a template Includes...), copied as they are."""
    for name in sorted(os.listdir(args.source)):
        src = os.path.join(args.source, name)
        if name in HANDLED or name.startswith(".") or name.endswith(("-old", ".wwbackup", "~")):
            continue
        if name in NOT_TAKEN:
            left.append(f"{src}: {NOT_TAKEN[name]}")
            continue
        dest = os.path.join(args.conf, name)
        if os.path.lexists(dest) and not args.force:
            left.append(f"{src}: {dest} exists (--force replaces it)")
            continue
        if os.path.isdir(src) and not os.path.islink(src):
            _copy_tree(src, dest)
        elif os.path.isfile(src):
            with open(src, "rb") as f:
                atomic_write(dest, f.read(), perms=os.stat(src).st_mode & 0o7777)
        else:
            continue
        took.append(f"{src} -> {dest} (for templates that Include it)")


def _copy_tree(src, dest):
    """Copy a directory as it is (modes, symlinks) into place whole: beside it first, then renamed."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.import.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True)
    if os.path.lexists(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)
