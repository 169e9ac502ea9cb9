"""What both newc writer twins share: limits, errors, name rules and the excludes matcher.

Kept in plain Python so the compiled twin (_cpio.pyx) and the pure twin (_cpio_py.py)
cannot disagree on which paths an archive holds or how they are spelled.
"""
import os
import re

MAGIC = b"070701"
HEADER_SIZE = 110
TRAILER_NAME = b"TRAILER!!!"
# newc stores sizes in 8 hex digits: 4 GiB - 1 is the largest file it can hold.
MAX_FILE_SIZE = 0xFFFFFFFF
BLOCK = 512
# Bumped whenever the bytes written for a given tree change (the build stage's fingerprint uses it).
WRITER_VERSION = 1


class CpioError(Exception):
    """The tree cannot be written as a newc archive (the message names the path)."""


class FileTooLarge(CpioError):
    """A regular file of 4 GiB or more: newc's 8-hex-digit size field cannot hold it."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        super().__init__(
            f"{os.fsdecode(path)}: {size} bytes; a newc (initramfs) archive cannot hold a file of 4 GiB "
            f"or more. Exclude it (etc/warewulf/excludes or 'image excludes') or shrink it")


def archive_name(name):
    """Relative archive spelling of `name` (str or bytes): no leading '/' or './'."""
    if isinstance(name, str):
        name = os.fsencode(name)
    while name.startswith(b"./"):
        name = name[2:]
    name = name.lstrip(b"/")
    if not name or name == b".":
        raise CpioError(f"empty archive member name {name!r}")
    return name


def clamp_u32(value):
    """newc fields are unsigned 32-bit: clamp out-of-range times instead of wrapping."""
    value = int(value)
    if value < 0:
        return 0
    return value if value <= 0xFFFFFFFF else 0xFFFFFFFF


def _go_match_regex(pattern):
    """Translate a Go filepath.Match pattern into a Python regex (None when Go calls it malformed).

    Go: '*' = any run of non-'/' characters, '?' = one non-'/' character, '[...]' a class
    ('^' negates, 'a-z' ranges), '\\' escapes the next character; the whole path must match.
    """
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= n:
                return None
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            parts = []
            first = True
            while True:
                if i >= n:
                    return None
                if pattern[i] == "]" and not first:
                    break
                first = False
                lo = pattern[i]
                if lo == "\\":
                    i += 1
                    if i >= n:
                        return None
                    lo = pattern[i]
                elif lo in "-]":
                    return None
                i += 1
                hi = lo
                if i < n and pattern[i] == "-":
                    i += 1
                    if i >= n:
                        return None
                    hi = pattern[i]
                    if hi == "\\":
                        i += 1
                        if i >= n:
                            return None
                        hi = pattern[i]
                    elif hi in "-]":
                        return None
                    i += 1
                    if hi < lo:
                        return None
                parts.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class Excludes:
    """Warewulf's image excludes: each pattern has its leading and trailing '/' stripped and is
    matched with Go's filepath.Match against the root-relative path; a matching directory is
    skipped with its whole subtree. Malformed patterns match nothing (as in Warewulf)."""

    def __init__(self, patterns=()):
        self.patterns = [p.strip("/") for p in patterns if p and p.strip("/")]
        regexes = [r for r in (_go_match_regex(p) for p in self.patterns) if r is not None]
        self._re = re.compile("(?:" + "|".join(regexes) + r")\Z", re.S) if regexes else None

    def __bool__(self):
        return self._re is not None

    def match(self, relpath):
        """True when `relpath` (bytes, no leading '/') is excluded."""
        return self._re is not None and self._re.match(os.fsdecode(relpath)) is not None


def as_excludes(excludes):
    return excludes if isinstance(excludes, Excludes) else Excludes(list(excludes or ()))
