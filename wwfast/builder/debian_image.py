"""Build (once) a small Debian 12 systemd image for diskless nodes, with Debian's own mmdebstrap.

The image holds systemd, the kernel package with its modules (hardware classes a diskless compute node
does not drive, such as GPUs, sound, wireless and media, are left out to keep it small), iproute2, curl,
openssh-server and what wwinit and the node agent use (cpio, kmod). systemd-networkd is enabled, so the
`network` overlay's files configure the node; the image's own SSH host keys are removed (the
`ssh.host_keys` overlay brings the cluster's). Packages come from this machine's configured apt
sources for the suite (deb822 `.sources` files and one-line `.list` entries naming it).

The result is a `.tar.zst` that `wwfast image import` takes, kept in a cache directory under a name
derived from the package list, the build options and those apt sources: a second build with the same
inputs returns the cached file at once.

    python -m wwfast.builder.debian_image [--cache DIR] [--force]     # prints the tarball's path
"""
import argparse
import glob
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "kmod", "linux-image-amd64", "iproute2", "curl",
            "openssh-server", "cpio")
# Kernel module directories (under lib/modules/VERSION/kernel/) left out of the image.
UNUSED_MODULES = ("drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/usb", "drivers/iio",
                  "drivers/staging", "drivers/comedi", "drivers/isdn", "drivers/hwmon", "drivers/mtd",
                  "drivers/video", "drivers/bluetooth", "drivers/net/wireless", "drivers/net/can",
                  "drivers/net/usb", "drivers/input/touchscreen", "drivers/target", "sound", "net/wireless",
                  "net/mac80211", "net/bluetooth")
# No documentation, manual pages or translations; no initramfs (wwfast boots the image itself); no
# firmware blobs (virtual and wired NICs need none); no udev hardware database (input devices and
# vendor names: a diskless compute node names its NICs by MAC through the network overlay).
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*",
                 "/etc/kernel/postinst.d/initramfs-tools", "/lib/firmware/*", "/lib/udev/hwdb.d/*",
                 "/usr/lib/udev/hwdb.d/*") + tuple(
                     f"/lib/modules/*/kernel/{d}/*" for d in UNUSED_MODULES)
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)
CUSTOMIZE = ('rm -f "$1"/etc/ssh/ssh_host_*',
             'systemctl --root="$1" enable systemd-networkd.service',
             'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*')
DEFAULT_CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "wwfast" / "debian"


class BuildError(RuntimeError):
    pass


def apt_sources(suite=SUITE, etc="/etc/apt"):
    """This machine's apt source entries for `suite` (and its -updates/-security), as sources.list text."""
    chunks = []
    files = [os.path.join(etc, "sources.list")] + sorted(glob.glob(os.path.join(etc, "sources.list.d", "*")))
    for path in files:
        try:
            text = pathlib.Path(path).read_text()
        except (FileNotFoundError, IsADirectoryError):
            continue
        if path.endswith(".sources"):
            for para in text.split("\n\n"):
                fields = dict(line.split(":", 1) for line in para.splitlines()
                              if ":" in line and not line.startswith(("#", " ")))
                suites = fields.get("Suites", "").split()
                if any(s == suite or s.startswith(suite + "-") for s in suites):
                    chunks.append("\n".join(l for l in para.splitlines() if not l.startswith("#")).strip() + "\n")
        elif path.endswith(".list"):
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")] if line.startswith("deb ") else []
                if len(words) >= 3 and (words[2] == suite or words[2].startswith(suite + "-")):
                    chunks.append(line.strip() + "\n")
    return "\n".join(chunks)


def mmdebstrap_args(sources_file, target, suite=SUITE):
    # merged /usr set up by mmdebstrap's own hook, not by the usrmerge package (which pulls in perl)
    args = ["mmdebstrap", "--variant=apt", "--mode=root", "--format=tar",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--aptopt=APT::Install-Recommends \"false\"", "--include=" + ",".join(PACKAGES)]
    args += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    args += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
    args += [f"--customize-hook={c}" for c in CUSTOMIZE]
    return args + [suite, str(target), str(sources_file)]


def cache_key(sources, suite=SUITE):
    """What the image is a function of: packages, options, apt sources (not the archive's state)."""
    doc = {"suite": suite, "packages": PACKAGES, "excludes": DPKG_EXCLUDES, "includes": DPKG_INCLUDES,
           "customize": CUSTOMIZE, "sources": sources, "format": 2}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def cached_path(cache_dir=DEFAULT_CACHE, suite=SUITE):
    sources = apt_sources(suite)
    return pathlib.Path(cache_dir) / f"debian-{suite}-{cache_key(sources, suite)}.tar.zst"


def build(cache_dir=DEFAULT_CACHE, suite=SUITE, force=False, log=print):
    """The cached image tarball, built first when missing (or `force`). Returns (path, seconds built, 0 if cached)."""
    sources = apt_sources(suite)
    if not sources:
        raise BuildError(f"no apt source for {suite} in /etc/apt/sources.list or /etc/apt/sources.list.d")
    out = pathlib.Path(cache_dir) / f"debian-{suite}-{cache_key(sources, suite)}.tar.zst"
    if out.is_file() and not force:
        log(f"debian image: cached {out} ({out.stat().st_size / 1e6:.0f} MB)")
        return out, 0.0
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap not installed (Debian package mmdebstrap; scripts/setup.sh installs it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.tar.zst")
    # mmdebstrap names the image's sources file after this one: /etc/apt/sources.list.d/0000debian.sources
    src_dir = pathlib.Path(tempfile.mkdtemp(prefix=".sources.", dir=out.parent))
    src = src_dir / "debian.sources"
    src.write_text(sources)
    log(f"debian image: building {out.name} with mmdebstrap ({len(PACKAGES)} packages, a few minutes)")
    started = time.monotonic()
    try:
        proc = subprocess.run(mmdebstrap_args(src, tmp, suite), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"mmdebstrap failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(src_dir, ignore_errors=True)
    seconds = time.monotonic() - started
    for old in out.parent.glob(f"debian-{suite}-*.tar.zst"):   # other keys: images of older inputs
        if old != out:
            old.unlink(missing_ok=True)
    log(f"debian image: built {out} ({out.stat().st_size / 1e6:.0f} MB) in {seconds:.0f} s")
    return out, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache directory (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="build even when a cached image exists")
    args = parser.parse_args(argv)
    try:
        path, _ = build(args.cache, force=args.force, log=lambda m: print(m, file=sys.stderr))
    except BuildError as e:
        print(f"debian image: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
