"""The newc writer, both twins: real GNU cpio and bsdtar must extract our archives into the tree we packed."""
import importlib
import io
import os
import stat
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.newc import read_newc
from helpers.trees import make_sample_tree, snapshot
from wwfast import cpio
from wwfast._cpio_common import CpioError, Excludes, FileTooLarge

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)

TWINS = ["wwfast._cpio", "wwfast._cpio_py"]


@pytest.fixture(params=TWINS)
def twin(request):
    return importlib.import_module(request.param)


@pytest.fixture
def sample_tree(tmp_path):
    return make_sample_tree(tmp_path / "tree")


def pack(twin, root, to_file=None, **kw):
    """Archive bytes from the twin, through a real file (copy_file_range path) or BytesIO."""
    mtime = kw.pop("mtime", None)
    if to_file is not None:
        with open(to_file, "wb") as f:
            w = twin.NewcWriter(f, mtime=mtime)
            w.add_tree(root, **kw)
            w.close()
        return to_file.read_bytes()
    buf = io.BytesIO()
    w = twin.NewcWriter(buf, mtime=mtime)
    w.add_tree(root, **kw)
    w.close()
    return buf.getvalue()


def extract(archive_path, dest, tool):
    dest.mkdir()
    if tool == "cpio":
        cmd = ["cpio", "-idm", "--quiet", "--no-absolute-filenames", "-F", str(archive_path)]
    else:
        cmd = ["bsdtar", "-xpf", str(archive_path), "--numeric-owner"]
    run = subprocess.run(cmd, cwd=dest, capture_output=True)
    assert run.returncode == 0, f"{tool} failed: {run.stderr.decode(errors='replace')}"
    return dest


@pytest.mark.parametrize("tool", ["cpio", "bsdtar"])
@pytest.mark.parametrize("output", ["file", "bytesio"])
def test_real_tools_extract_identical_tree(twin, sample_tree, tmp_path, tool, output):
    archive = tmp_path / "a.cpio"
    data = pack(twin, sample_tree, to_file=archive if output == "file" else None)
    archive.write_bytes(data)
    out = extract(archive, tmp_path / "out", tool)
    # GNU cpio 2.13 restores neither directory nor symlink mtimes (bsdtar does: its side checks them,
    # and test_archive_carries_every_mtime checks they are in the archive); everything else must match.
    gnu = tool == "cpio"
    want = snapshot(sample_tree, symlink_mtimes=not gnu, dir_mtimes=not gnu)
    got = snapshot(out, symlink_mtimes=not gnu, dir_mtimes=not gnu)
    assert got == want
    # Hard-link identity really survived (same inode), not just equal content.
    assert os.stat(out / "usr/bin/busybox").st_ino == os.stat(out / "usr/bin/sh").st_ino
    assert os.stat(out / "usr/bin/busybox").st_ino == os.stat(out / "etc/zz-busybox-link").st_ino
    assert os.stat(out / "etc/small-linked").st_ino == os.stat(out / "var/small-linked").st_ino


def test_archive_carries_every_mtime(twin, sample_tree):
    for m in read_newc(pack(twin, sample_tree)):
        if m.name != b"TRAILER!!!":
            assert m.mtime == int(os.lstat(os.path.join(os.fsencode(sample_tree), m.name)).st_mtime), m.name


def test_header_layout_is_newc(twin):
    buf = io.BytesIO()
    w = twin.NewcWriter(buf)
    w.add_file("/etc/a", b"xy", mode=0o644, uid=1, gid=2, mtime=0x10)
    w.close()
    raw = buf.getvalue()
    assert raw[:110] == (b"070701" + b"00000001" + b"000081A4" + b"00000001" + b"00000002" + b"00000001"
                         + b"00000010" + b"00000002" + b"00000000" * 4 + b"00000006" + b"00000000")
    assert raw[110:116] == b"etc/a\0"          # name + NUL: 116 is already 4-aligned
    assert raw[116:120] == b"xy\0\0"           # data padded to 4
    assert raw[120:126] == b"070701"           # trailer follows
    assert len(raw) == 512 and raw.rstrip(b"\0").endswith(b"TRAILER!!!")


def test_hard_links_data_once_on_last_link(twin, sample_tree):
    members = {m.name: m for m in read_newc(pack(twin, sample_tree))}
    group = [members[n] for n in (b"etc/zz-busybox-link", b"usr/bin/busybox", b"usr/bin/sh")]
    assert len({m.ino for m in group}) == 1
    assert [m.nlink for m in group] == [3, 3, 3]
    assert [m.filesize for m in group] == [0, 0, 200_000]     # archive order; data on the last
    inos = [m.ino for m in members.values() if m.name != b"TRAILER!!!"]
    assert sorted(set(inos)) == list(range(1, len(set(inos)) + 1))   # renumbered from 1
    assert all(m.devmajor == 0 and m.devminor == 0 for m in members.values())


def test_order_sorted_parents_first(twin, sample_tree):
    names = [m.name for m in read_newc(pack(twin, sample_tree))][:-1]
    seen = set()
    for name in names:
        parent = name.rpartition(b"/")[0]
        assert not parent or parent in seen, f"{name} before its directory"
        seen.add(name)
    assert names[:3] == [b"dev", b"dev/null", b"dev/sda1"]


def test_deterministic_and_fixed_mtime(twin, sample_tree, tmp_path):
    a = pack(twin, sample_tree, mtime=1234)
    os.utime(sample_tree / "etc" / "hosts", (99, 99))
    b = pack(twin, sample_tree, mtime=1234)
    assert a == b
    assert {m.mtime for m in read_newc(a) if m.name != b"TRAILER!!!"} == {1234}
    assert pack(twin, sample_tree) != a


def test_twins_identical_on_sample(sample_tree, tmp_path):
    compiled = importlib.import_module("wwfast._cpio")
    pure = importlib.import_module("wwfast._cpio_py")
    assert pack(compiled, sample_tree, to_file=tmp_path / "c") == pack(pure, sample_tree)
    assert pack(pure, sample_tree, to_file=tmp_path / "p") == pack(compiled, sample_tree)


def test_file_output_appends_after_existing_content(twin, sample_tree, tmp_path):
    """A real file that already holds bytes: the fd-level writes go after them, buffered entries in order."""
    pure = importlib.import_module("wwfast._cpio_py")
    with open(tmp_path / "c.cpio", "wb") as f:
        f.write(b"prefix!!")
        w = twin.NewcWriter(f, mtime=7)
        w.add_file("first", b"in the buffer before the tree")
        w.add_tree(sample_tree)
        w.add_file("last", b"after the tree")
        w.close()
    buf = io.BytesIO()
    w = pure.NewcWriter(buf, mtime=7)
    w.add_file("first", b"in the buffer before the tree")
    w.add_tree(sample_tree)
    w.add_file("last", b"after the tree")
    w.close()
    assert (tmp_path / "c.cpio").read_bytes() == b"prefix!!" + buf.getvalue()


class _Wrapper:
    """Like a compressor's stream writer: exposes its inner file's fileno() but transforms writes."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data).swapcase())
        return len(data)

    def fileno(self):
        return self.f.fileno()

    def flush(self):
        self.f.flush()


def test_wrapped_file_gets_every_byte_through_the_wrapper(twin, sample_tree, tmp_path):
    with open(tmp_path / "w.cpio", "wb") as f:
        w = twin.NewcWriter(_Wrapper(f), mtime=1)
        w.add_tree(sample_tree)
        w.close()
    plain = pack(twin, sample_tree, mtime=1)
    assert (tmp_path / "w.cpio").read_bytes() == plain.swapcase()


@pytest.fixture
def other_fs_dir(tmp_path):
    """A tmpfs mounted for the test: the archive on another file system than the tree."""
    mnt = tmp_path / "other-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "wwfast-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_output_on_another_file_system(twin, sample_tree, other_fs_dir):
    """Cross-file-system output (where in-kernel copies fail with EXDEV) writes the same bytes."""
    data = pack(twin, sample_tree, to_file=other_fs_dir / "a.cpio")
    assert data == pack(importlib.import_module("wwfast._cpio_py"), sample_tree)


_names = st.text(alphabet="abcxyz._-é", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))
_node = st.recursive(
    st.one_of(st.binary(max_size=300).map(lambda b: ("file", b)),
              st.integers(0, 70_000).map(lambda n: ("bigfile", n)),
              _names.map(lambda t: ("symlink", t))),
    lambda children: st.dictionaries(_names, children, max_size=5).map(lambda d: ("dir", d)),
    max_leaves=12)


def _materialise(root, node, links):
    kind, value = node
    if kind == "dir":
        os.mkdir(root, 0o750)
        for name, child in sorted(value.items()):
            _materialise(os.path.join(root, name), child, links)
    elif kind == "file":
        with open(root, "wb") as f:
            f.write(value)
        if len(value) % 3 == 0:
            links.append(root)
    elif kind == "bigfile":
        with open(root, "wb") as f:
            f.write(bytes([value % 251]) * value)
    else:
        os.symlink(value, root)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(_names, _node, max_size=6), mtime=st.one_of(st.none(), st.integers(0, 2**32)))
def test_twins_identical_hypothesis(tmp_path_factory, tree, mtime):
    root = tmp_path_factory.mktemp("h")
    links = []
    _materialise(str(root / "t"), ("dir", tree), links)
    for i, path in enumerate(links):   # hard links in another directory, exercising the link plan
        os.link(path, os.path.join(root, "t", f"zlink{i}"))
    compiled = importlib.import_module("wwfast._cpio")
    pure = importlib.import_module("wwfast._cpio_py")
    a = pack(compiled, root / "t", to_file=root / "c.cpio", mtime=mtime)
    b = pack(pure, root / "t", mtime=mtime)
    c = pack(pure, root / "t", to_file=root / "p.cpio", mtime=mtime)
    d = pack(compiled, root / "t", mtime=mtime)   # and its in-memory path
    assert a == b == c == d


def test_in_memory_entries_extract(twin, tmp_path):
    """The overlay path: add_dir/add_file/add_symlink only, then two archives concatenated."""
    buf = io.BytesIO()
    w = twin.NewcWriter(buf, mtime=5)
    w.add_dir("etc", mode=0o755)
    w.add_file("etc/hostname", b"n001\n", mode=0o644, uid=0, gid=0)
    w.add_file("./etc/secret", b"s", mode=0o600, uid=7, gid=8, mtime=77)
    w.add_symlink("/etc/localtime", "/usr/share/zoneinfo/UTC")
    w.close()
    archive = tmp_path / "o.cpio"
    archive.write_bytes(buf.getvalue())
    out = extract(archive, tmp_path / "out", "cpio")
    assert (out / "etc/hostname").read_bytes() == b"n001\n"
    st_secret = os.stat(out / "etc/secret")
    assert (stat.S_IMODE(st_secret.st_mode), st_secret.st_uid, st_secret.st_gid, st_secret.st_mtime) == \
        (0o600, 7, 8, 77)
    assert os.readlink(out / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert os.stat(out / "etc/hostname").st_mtime == 5


def test_file_of_4gib_is_refused_by_name(twin, tmp_path):
    root = tmp_path / "tree"
    (root / "var").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "ok").write_bytes(b"ok")
    with open(root / "var" / "huge.img", "wb") as f:
        f.truncate(4 << 30)          # sparse: no real 4 GiB written
    buf = io.BytesIO()
    w = twin.NewcWriter(buf)
    with pytest.raises(FileTooLarge) as info:
        w.add_tree(root)
    assert "var/huge.img" in str(info.value) and "4 GiB" in str(info.value)
    assert buf.getvalue() == b""     # refused before writing anything
    out = tmp_path / "x.cpio"
    with pytest.raises(FileTooLarge):
        cpio.pack_tree(root, out)
    assert not out.exists() and not list(tmp_path.glob(".x.cpio*"))


def test_excludes_warewulf_rules(twin, tmp_path):
    root = tmp_path / "tree"
    for d in ("boot/grub", "usr/share/GeoIP", "usr/share/doc", "var/log/a"):
        (root / d).mkdir(parents=True)
    for f in ("boot/vmlinuz", "boot/grub/grub.cfg", "usr/share/GeoIP/db", "usr/share/doc/README",
              "top.log", "var/log/a/deep.log", "var/log/x.log", "keep"):
        (root / f).write_bytes(b"x")
    excludes = ["/boot/", "usr/share/GeoIP", "*.log", "var/log/*.log", "[", "usr/share/[d]oc/README"]
    names = {m.name for m in read_newc(pack(twin, root, excludes=excludes))}
    assert names == {b"usr", b"usr/share", b"usr/share/doc", b"var", b"var/log", b"var/log/a",
                     b"var/log/a/deep.log", b"keep", b"TRAILER!!!"}


def test_go_match_semantics():
    m = Excludes(["a*", "b?c", "[^x]y", "d\\*", "e/[a-c]"])
    assert m.match(b"abc") and not m.match(b"a/b")          # '*' stops at '/'
    assert m.match(b"bxc") and not m.match(b"b/c")
    assert m.match(b"zy") and not m.match(b"xy")
    assert m.match(b"d*") and not m.match(b"dd")
    assert m.match(b"e/b") and not m.match(b"e/d")
    assert not Excludes(["[", "a[b"]).match(b"[")              # malformed: matches nothing (Go ErrBadPattern)


@pytest.fixture
def tree_with_mount(tmp_path):
    root = tmp_path / "tree"
    (root / "proc").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "f").write_bytes(b"f")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "wwfast-test", str(root / "proc")], check=True)
    try:
        (root / "proc" / "inside").write_bytes(b"not archived")
        yield root
    finally:
        subprocess.run(["umount", str(root / "proc")], check=True)


def test_one_file_system(twin, tree_with_mount):
    names = {m.name for m in read_newc(pack(twin, tree_with_mount))}
    assert names == {b"etc", b"etc/f", b"proc", b"TRAILER!!!"}      # mount point kept, empty
    names = {m.name for m in read_newc(pack(twin, tree_with_mount, one_file_system=False))}
    assert b"proc/inside" in names


def test_bad_inputs_are_clear(twin, tmp_path):
    w = twin.NewcWriter(io.BytesIO())
    with pytest.raises(CpioError, match="missing"):
        w.add_tree(tmp_path / "missing")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(CpioError, match="not a directory"):
        w.add_tree(tmp_path / "f")
    with pytest.raises(CpioError):
        w.add_file("", b"")
    w.close()
    with pytest.raises(CpioError, match="closed"):
        w.add_file("a", b"")


def test_pack_tree_atomic_output(sample_tree, tmp_path):
    out = tmp_path / "sub" / "image.cpio"
    count = cpio.pack_tree(sample_tree, out, mtime=0)
    assert count == len(snapshot(sample_tree))
    assert out.read_bytes() == pack(importlib.import_module("wwfast._cpio_py"), sample_tree, mtime=0)


def test_source_date_epoch():
    assert cpio.source_date_epoch({"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    assert cpio.source_date_epoch({"SOURCE_DATE_EPOCH": "soon"}) is None
    assert cpio.source_date_epoch({}) is None


def test_a_writer_without_fd_gets_its_buffer_in_pieces_each_valid_during_its_call(twin, sample_tree):
    """No copy per flush: the sink sees bytes-like pieces of the writer's buffer, which is refilled
    afterwards, so a sink copies what it keeps (hashlib, zstd, BytesIO do); the copies make the archive."""
    class Sink:
        def __init__(self):
            self.copies, self.kinds = [], set()

        def write(self, data):
            self.copies.append(bytes(data))
            self.kinds.add(type(data).__name__)
            return len(data)

    sink = Sink()
    w = twin.NewcWriter(sink, mtime=0)
    w.add_tree(sample_tree)
    big = os.urandom(3 << 20)         # more than one buffer's worth: several flushes
    w.add_file("big", big)
    w.close()
    members = {m.name: m for m in read_newc(b"".join(sink.copies))}
    assert members[b"big"].data == big and len(sink.copies) >= 3
    assert sink.kinds <= {"bytearray", "memoryview"}      # the buffer itself, not a bytes copy of it
