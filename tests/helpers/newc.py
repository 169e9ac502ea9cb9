"""Read a newc archive back into entries (tests only: an independent reader to check what we write)."""
import dataclasses

FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")


@dataclasses.dataclass
class Member:
    name: bytes
    data: bytes
    offset: int
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    filesize: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    namesize: int
    check: int


def read_newc(blob):
    """Yield every Member up to and including TRAILER!!!; asserts the framing rules as it goes."""
    pos = 0
    while True:
        assert pos % 4 == 0, f"header at unaligned offset {pos}"
        head = blob[pos:pos + 110]
        assert head[:6] == b"070701", f"bad magic {head[:6]!r} at {pos}"
        values = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        fields = dict(zip(FIELDS, values))
        name_end = pos + 110 + fields["namesize"]
        name = blob[pos + 110:name_end - 1]
        assert blob[name_end - 1] == 0, "name not NUL-terminated"
        data_start = (name_end + 3) & ~3
        data = blob[data_start:data_start + fields["filesize"]]
        member = Member(name=name, data=data, offset=pos, **fields)
        yield member
        if name == b"TRAILER!!!":
            return
        pos = (data_start + fields["filesize"] + 3) & ~3



def split_archives(blob):
    """The newc archives written back to back in `blob` (as the kernel takes an initrd made of several),
    each whole with its trailer. Zero padding between archives is skipped, as the kernel skips it."""
    parts, pos = [], 0
    while pos < len(blob):
        if blob[pos:pos + 4] == b"\0\0\0\0":
            pos += 4
            continue
        for member in read_newc(blob[pos:]):
            if member.name == b"TRAILER!!!":
                end = pos + ((member.offset + 110 + member.namesize + 3) & ~3)
        parts.append(blob[pos:end])
        pos = end
    return parts


def read_concatenated(blob):
    """Yield the members of every archive in `blob` (split_archives), trailers left out."""
    for part in split_archives(blob):
        for member in read_newc(part):
            if member.name != b"TRAILER!!!":
                yield member
