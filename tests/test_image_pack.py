"""Packing an image straight into the compressors gives the bytes compressing its raw archive gives.

Both newc writer twins: the `planned` size is the archive's exact size (zstd pledges it before the first
byte), and pack_image's .cpio.zst/.cpio.gz equal ZstdEncoder/GzipEncoder run over the raw archive, with
the recorded sizes and hashes. A repack of the same tree keeps the files in place (inode unchanged).
"""
import hashlib
import io
import os

import pytest

from wwfast import cpio
from wwfast.builder import image_pack
from wwfast.publish import compress

pytestmark = pytest.mark.twin


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    for d in ("bin", "etc", "usr/lib", "empty"):
        (root / d).mkdir(parents=True)
    (root / "bin/tool").write_bytes(os.urandom(3 << 20))            # several gzip blocks, incompressible
    (root / "usr/lib/zeros").write_bytes(b"\0" * ((1 << 20) + 5))
    (root / "etc/hostname").write_text("node\n")
    (root / "etc/empty-file").write_bytes(b"")
    os.link(root / "etc/hostname", root / "etc/hostname.link")       # hard link: data once, on the last
    os.symlink("../bin/tool", root / "usr/tool")
    return root


class _Sink:
    def __init__(self):
        self.buf = io.BytesIO()

    def write(self, data):
        return self.buf.write(data)


@pytest.mark.parametrize("module", ["wwfast._cpio", "wwfast._cpio_py"])
def test_planned_size_is_the_archive_size(tree, module):
    import importlib
    twin = importlib.import_module(module)
    sink, planned = _Sink(), []
    writer = twin.NewcWriter(sink, mtime=0)
    writer.add_tree(str(tree), planned=lambda n: planned.append((n, sink.buf.tell())))
    writer.close()
    (size, written_before), = planned
    assert written_before == 0         # called before the first byte reached the output
    assert cpio.archive_size(size) == len(sink.buf.getvalue())


def test_packed_files_equal_compressing_the_raw_archive(tree, tmp_path):
    raw = io.BytesIO()
    writer = cpio.NewcWriter(raw, mtime=0)
    writer.add_tree(str(tree))
    writer.close()
    raw = raw.getvalue()
    zst, gz = io.BytesIO(), io.BytesIO()
    compress.ZstdEncoder(3, 0).compress(io.BytesIO(raw), zst, len(raw))
    compress.GzipEncoder(compress.GZIP_LEVEL, 0).compress(io.BytesIO(raw), gz)

    out = tmp_path / "out"
    out.mkdir()
    result = image_pack.pack_image(str(tree), str(out), "img", encodings=("zst", "gz"), zstd_level=3, mtime=0)
    assert result["size"] == len(raw) and result["sha256"] == hashlib.sha256(raw).hexdigest()
    for enc, expected in (("zst", zst.getvalue()), ("gz", gz.getvalue())):
        data = (out / f"img.cpio.{enc}").read_bytes()
        assert data == expected, enc
        assert result["files"][enc] == {"file": f"img.cpio.{enc}", "size": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest()}
    assert sorted(p.name for p in out.iterdir()) == ["img.cpio.gz", "img.cpio.zst"]    # no temp, no raw

    inode = (out / "img.cpio.zst").stat().st_ino
    again = image_pack.pack_image(str(tree), str(out), "img", encodings=("zst", "gz"), zstd_level=3, mtime=0,
                                  keep=lambda r: r["sha256"] == result["sha256"])
    assert again["kept"] and (out / "img.cpio.zst").stat().st_ino == inode
    assert sorted(p.name for p in out.iterdir()) == ["img.cpio.gz", "img.cpio.zst"]
