"""Archives the build already packed into their compressed forms, and files the store takes by link.

The build packs an image straight into zstd (and gzip) and lists it in build.json under "packed":
    "packed": {"images/<image>.cpio": {"size": N, "sha256": "<of the newc bytes>",
               "zst": {"file": "images/<image>.cpio.zst", "size": n, "sha256": "<of that file>"},
               "gz": {...}}}
Nodes keep naming the archive "images/<image>.cpio"; no such raw file exists. The compress stage
publishes such an archive without reading it: its store name comes from the recorded content hash,
its manifest entry from the recorded file hash, and the store file is a hard link to the build's
file. Kernels are linked the same way. So the disk holds each published file once: build writes its
outputs by rename and never edits them in place, so a link never sees its bytes change.
"""
import contextlib
import os

from wwfast.publish import compress

ENCODINGS = ("zst", "gz")


class PackedError(Exception):
    """build.json's record of a packed archive is unusable (the message says why)."""


def read(build, where):
    """{archive rel: record} from build.json's "packed" (empty when the build packed none)."""
    packed = build.get("packed", {})
    if not isinstance(packed, dict):
        raise PackedError(f"{where}: \"packed\" is not an object")
    for rel, record in packed.items():
        try:
            ok = isinstance(record["size"], int) and len(record["sha256"]) == 64 and any(
                isinstance(record.get(enc), dict) for enc in ENCODINGS)
            for enc in ENCODINGS:
                if enc in record:
                    ok = ok and isinstance(record[enc]["file"], str) and isinstance(record[enc]["size"], int) \
                        and len(record[enc]["sha256"]) == 64
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise PackedError(f"{where}: packed archive {rel!r}: expected size, sha256 and zst/gz files")
        for enc in ENCODINGS:
            name = record.get(enc, {}).get("file", "")
            if os.path.isabs(name) or ".." in name.split("/"):
                raise PackedError(f"{where}: {name!r} is not a path inside the build directory")
    return packed


def files(record):
    """The build files of a packed archive, by encoding."""
    return {enc: record[enc]["file"] for enc in ENCODINGS if enc in record}


def stat_key(base, rel, record):
    """[uncompressed size] + [size, mtime, inode] of each of its files; PackedError when one is gone or
    is not the file the build recorded."""
    key = [record["size"]]
    for enc, name in sorted(files(record).items()):
        path = os.path.join(base, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise PackedError(f"{path} ({rel} packed) is named in build.json but does not exist: "
                              f"run the build stage") from None
        if st.st_size != record[enc]["size"]:
            raise PackedError(f"{path} is not the file the build recorded ({st.st_size} bytes, not "
                              f"{record[enc]['size']}): run the build stage")
        key += [st.st_size, st.st_mtime_ns, st.st_ino]
    return key


def entry(base, rel, record, enc):
    """(build file path, manifest entry size, sha256) of one encoding; PackedError when the build did
    not make it (the settings asked for gzip after the build ran)."""
    if enc not in record:
        raise PackedError(f"{rel}: the build packed no {enc} copy, which the settings now ask for: "
                          f"run the build stage")
    return os.path.join(base, record[enc]["file"]), record[enc]["size"], record[enc]["sha256"]


def link_into(src, dest, temp_prefix, temp_suffix, expect=None):
    """Put a hard link to `src` at `dest` (a temp name first, renamed: `dest` appears whole). Returns
    False when the file system will not link (another device, no hard links): copy instead.
    `expect`: (size, mtime_ns, inode) the source must still have."""
    directory = os.path.dirname(dest)
    tmp = os.path.join(directory, f"{temp_prefix}{os.path.basename(dest)}.{os.getpid()}.link{temp_suffix}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        return False
    try:
        st = os.stat(tmp)
        if expect is not None and [st.st_size, st.st_mtime_ns, st.st_ino] != list(expect):
            raise PackedError(f"{src} changed while it was published: is a build running?")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def copy_into(src, dest_file):
    """Copy `src` into the open file `dest_file` (when linking is refused)."""
    with open(src, "rb", buffering=0) as f:
        while chunk := f.read(compress.READ_SIZE):
            dest_file.write(chunk)
