"""`wwfast configure tftp`: what the TFTP root serves per client architecture, and filling it.

The DHCP configuration offers each architecture of `tftp: ipxe` its file; `wwfast serve` sends it from
`tftp: tftproot`. `--show` lists them and says which are missing; without it, missing files are copied
into the root (atomically) from where they come from: the absolute path given in `tftp: ipxe`,
else the iPXE source directory (Warewulf's `paths: ipxesource`, default /usr/lib/ipxe, Debian's `ipxe`).
"""
import os

from wwfast import fsutil
from wwfast.configure.plan import boot_file_name, boot_files


# With warewulf: grubboot the DHCP configuration offers x86-64 UEFI clients shim.efi instead of iPXE.
GRUB_CHAIN = (("shim.efi", "first stage for x86-64 UEFI: a shim, or GRUB itself without Secure Boot"),
              ("grubx64.efi", "what a shim loads next; GRUB then reads grub.cfg per node from serve's "
                              "/efiboot/grub.cfg or /grub/<mac>"))


class Entry:
    def __init__(self, boot, path, source):
        self.boot = boot                 # plan.BootFile
        self.path = path                 # where the TFTP server reads it
        self.source = source             # where it comes from (may be the same file)

    @property
    def present(self):
        return os.path.isfile(self.path)

    def same_as_source(self):
        if os.path.realpath(self.path) == os.path.realpath(self.source):
            return True
        try:
            a, b = os.stat(self.path), os.stat(self.source)
        except OSError:
            return False
        return a.st_size == b.st_size and fsutil.sha256_file(self.path) == fsutil.sha256_file(self.source)


def inventory(settings):
    """One Entry per architecture of `tftp: ipxe`, sorted by architecture."""
    entries = []
    by_arch = {b.arch: b for b in boot_files(settings)}
    for key, value in settings.ipxe_binaries.items():
        boot = next(b for b in by_arch.values() if b.key == key)
        name = boot_file_name(value)
        source = value if value.startswith("/") else os.path.join(settings.ipxe_source, value)
        entries.append(Entry(boot, os.path.join(settings.tftp_root, name), source))
    return sorted(entries, key=lambda e: e.boot.arch)


def show(settings):
    lines = [f"TFTP root {settings.tftp_root} (served by `wwfast serve`"
             f"{'' if settings.tftp_enabled else '; tftp: enabled is false, so serve will not'}):"]
    missing = 0
    for e in inventory(settings):
        head = f"  {e.boot.key} {e.boot.description:<22} {e.boot.file:<24}"
        if e.present:
            lines.append(f"{head} ok, {os.path.getsize(e.path)} bytes")
            continue
        missing += 1
        if os.path.isfile(e.source):
            lines.append(f"{head} MISSING: `wwfast configure tftp` copies it from {e.source}")
        else:
            lines.append(f"{head} MISSING: not in {e.source} either (install the iPXE binaries, e.g. Debian's "
                         f"ipxe package, or change tftp: ipxe)")
    lines.append("  per-node iPXE scripts: <mac>.ipxe (e.g. 52-54-00-00-00-01.ipxe), answered from the published "
                 "manifest")
    if settings.grubboot:
        for name, what in GRUB_CHAIN:
            path = os.path.join(settings.tftp_root, name)
            state = f"ok, {os.path.getsize(path)} bytes" if os.path.isfile(path) else "MISSING (the site puts it here)"
            lines.append(f"  grubboot: {name:<12} {what}: {state}")
    if missing:
        lines.append(f"{missing} boot file(s) missing: those architectures cannot boot")
    return lines, missing


def install(settings):
    """Copy what is missing into the TFTP root (a file already there is the admin's: kept, and reported
    when it differs from its source); returns (lines, count still missing)."""
    lines, missing = [], 0
    for e in inventory(settings):
        if e.present:
            if os.path.isfile(e.source) and not e.same_as_source():
                lines.append(f"tftp: {e.path} differs from {e.source}: kept (remove it to take that one)")
            continue
        if not os.path.isfile(e.source):
            missing += 1
            lines.append(f"tftp: {e.boot.file} ({e.boot.description}) missing and not in {e.source}")
            continue
        with open(e.source, "rb") as f:
            fsutil.atomic_write(e.path, f.read())
        lines.append(f"tftp: copied {e.path} from {e.source}")
    if not lines:
        lines.append(f"tftp: {settings.tftp_root} has every boot file; nothing written")
    return lines, missing
