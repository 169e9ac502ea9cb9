"""Kernel discovery inside an image, exactly as Warewulf v4 (internal/pkg/kernel/kernel.go).

- Globs, in this order, inside the image root: /boot/Image-*, /boot/vmlinuz-linux*, /boot/vmlinuz-*,
  /lib/modules/*/vmlinuz, /lib/modules/*/vmlinuz.gz (each glob's matches sorted, as Go's Glob).
- The version is parsed from the path (Warewulf's util.ParseVersion with hashicorp go-version):
  the first "N.N.N[-N[.N...]]" in it; the part after '-' is a pre-release, ordered below the release.
- Default kernel: the highest version whose path contains neither "+debug" nor "-rescue".
- A node's `kernel.version` is an absolute path inside the image (used when that file exists) or a
  version prefix: the first kernel, in glob order, that is not debug/rescue and whose version starts
  with it.
"""
import dataclasses
import functools
import glob
import os
import re

from wwfast.fsutil import resolve_in_root

SEARCH_PATTERNS = (
    "/boot/Image-*",            # SUSE aarch64 (its vmlinux does not boot)
    "/boot/vmlinuz-linux*",
    "/boot/vmlinuz-*",
    "/lib/modules/*/vmlinuz",
    "/lib/modules/*/vmlinuz.gz",
)
_VERSION = re.compile(r"(\d+(?:\.\d+){2,})(?:-(\d+(?:\.\d+)*))?")


class KernelError(Exception):
    """No usable kernel, or a node asks for one the image does not have (the message says which)."""


@functools.total_ordering
@dataclasses.dataclass(frozen=True)
class Version:
    release: tuple      # numeric segments, e.g. (6, 1, 0)
    pre: tuple          # numeric pre-release parts, e.g. (13,); () for a release

    def __str__(self):
        text = ".".join(map(str, self.release))
        return text + ("-" + ".".join(map(str, self.pre)) if self.pre else "")

    def _key(self):
        # go-version: segments padded with zeros; a pre-release sorts below the release.
        width = 8
        seg = tuple(self.release) + (0,) * max(0, width - len(self.release))
        return (seg, 0 if self.pre else 1, self.pre)

    def __lt__(self, other):
        return self._key() < other._key()


def parse_version(path):
    """The kernel version in a path, or None (e.g. /boot/vmlinuz-linux on Arch)."""
    m = _VERSION.search(path)
    if m is None:
        return None
    release = tuple(int(x) for x in m.group(1).split("."))
    pre = tuple(int(x) for x in m.group(2).split(".")) if m.group(2) else ()
    return Version(release, pre)


# Linux unpacks zstd-compressed initrds since 5.9; older kernels need gzip.
ZSTD_SINCE = (5, 9)


def reads_zstd(version):
    """Whether a kernel of this version (text, as in build.json) unpacks zstd initrds; an unknown
    version is taken to be a current kernel."""
    v = parse_version(version or "")
    return v is None or tuple(v.release[:2]) >= ZSTD_SINCE


@dataclasses.dataclass(frozen=True)
class Kernel:
    path: str           # absolute inside the image, e.g. /boot/vmlinuz-6.1.0-13-amd64
    image_root: str

    @property
    def version(self):
        v = parse_version(self.path)
        return str(v) if v else ""

    @property
    def is_debug(self):
        return "+debug" in self.path

    @property
    def is_rescue(self):
        return "-rescue" in self.path

    @property
    def full_path(self):
        """The real file on the server, symlinks resolved inside the image (never onto the host)."""
        try:
            return resolve_in_root(self.image_root, self.path)
        except OSError as e:
            raise KernelError(str(e)) from None


def find_kernels(image_root):
    """Every kernel in the image, in Warewulf's glob order (duplicates from overlapping globs once)."""
    root = os.path.abspath(image_root)
    seen = set()
    kernels = []
    for pattern in SEARCH_PATTERNS:
        for full in sorted(glob.glob(glob.escape(root) + pattern)):
            path = "/" + os.path.relpath(full, root)
            if path not in seen:
                seen.add(path)
                kernels.append(Kernel(path, root))
    return kernels


def default_kernel(kernels):
    """Highest version, skipping +debug and -rescue; unversioned ones rank lowest."""
    usable = [k for k in kernels if not (k.is_debug or k.is_rescue)]
    if not usable:
        return None
    # Stable sort, highest first: equal versions keep glob order (the first found wins).
    ranked = sorted(usable, key=_rank, reverse=True)
    return ranked[0]


def _rank(kernel):
    v = parse_version(kernel.path)
    return (v is not None, v or Version((), ()))


def kernel_by_version(kernels, prefix):
    for k in kernels:
        if not (k.is_debug or k.is_rescue) and k.version.startswith(prefix):
            return k
    return None


def select_kernel(image_root, wanted=""):
    """The kernel a node boots: `wanted` is the node's kernel.version ("" = the default)."""
    kernels = find_kernels(image_root)
    if wanted:
        candidate = Kernel(wanted if wanted.startswith("/") else "/" + wanted, os.path.abspath(image_root))
        try:
            if os.path.isfile(candidate.full_path):
                return candidate
        except KernelError:
            pass
        chosen = kernel_by_version(kernels, wanted)
        if chosen is None:
            have = ", ".join(f"{k.path} ({k.version or 'no version'})" for k in kernels) or "none"
            raise KernelError(f"kernel version {wanted!r} is neither a file in the image nor the prefix "
                              f"of a kernel version there (found: {have})")
        return chosen
    chosen = default_kernel(kernels)
    if chosen is None:
        raise KernelError("no kernel found in the image (looked for " + ", ".join(SEARCH_PATTERNS) + ")")
    return chosen
