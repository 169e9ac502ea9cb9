"""fsutil's durability helpers: flush-behind while a large file is written, and scoped syncs.

Asserted on records of the calls (which byte ranges were handed to writeback, which files were fsynced),
never on timing."""
import hashlib
import os

from wwfast import fsutil


def test_flush_behind_hands_every_written_range_to_writeback_in_order(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fsutil, "_sync_file_range", lambda: lambda fd, off, n, flags: calls.append((off, n, flags)))
    chunk = bytes(range(256)) * 4096          # 1 MiB
    path = tmp_path / "big"
    with fsutil.atomic_file(path) as f:
        out = fsutil.HashingWriter(f, flush_behind=True)
        for _ in range(20):
            out.write(chunk)
    assert path.read_bytes() == chunk * 20
    assert out.hash.hexdigest() == hashlib.sha256(chunk * 20).hexdigest() and out.size == 20 * len(chunk)
    step = fsutil.WRITEBACK_STEP
    assert calls == [(0, step, 2), (step, step, 2)]        # contiguous ranges, nothing twice; the rest: fsync


def test_flush_behind_really_calls_the_kernel(tmp_path):
    # sync_file_range on a real file: no error, the bytes are the ones written
    data = os.urandom(fsutil.WRITEBACK_STEP + 4096)
    with open(tmp_path / "f", "wb") as f:
        out = fsutil.HashingWriter(f, flush_behind=True)
        out.write(data)
        assert out._kicked == len(data) and out._kick is not None
    assert (tmp_path / "f").read_bytes() == data


def test_flush_behind_gives_up_quietly_when_refused(tmp_path, monkeypatch):
    calls = []

    def refuse(fd, off, n, flags):
        calls.append(off)
        return -1
    monkeypatch.setattr(fsutil, "_sync_file_range", lambda: refuse)
    with open(tmp_path / "f", "wb") as f:
        out = fsutil.HashingWriter(f, flush_behind=True)
        for _ in range(3):
            out.write(b"x" * fsutil.WRITEBACK_STEP)
    assert calls == [0] and (tmp_path / "f").stat().st_size == 3 * fsutil.WRITEBACK_STEP


def _record_syncs(monkeypatch):
    record = {"fsync": [], "dirs": [], "syncfs": []}
    real_fsync = os.fsync
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: (record["fsync"].append(os.readlink(f"/proc/self/fd/{fd}")),
                                                        real_fsync(fd)))
    monkeypatch.setattr(fsutil, "fsync_dir", lambda d: record["dirs"].append(os.fspath(d)))
    monkeypatch.setattr(fsutil, "syncfs", lambda p: record["syncfs"].append(os.fspath(p)))
    return record


def test_sync_files_fsyncs_a_few_files_and_their_directories_only(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    files = [tmp_path / "a" / "x", tmp_path / "a" / "y", tmp_path / "z"]
    for f in files:
        f.write_text("data")
    record = _record_syncs(monkeypatch)
    fsutil.sync_files(files + files[:1], dirs=[tmp_path / "a"])       # a file named twice: synced once
    assert record["fsync"] == [str(f) for f in files]
    assert record["dirs"] == sorted([str(tmp_path), str(tmp_path / "a")])
    assert record["syncfs"] == []


def test_sync_files_uses_one_syncfs_for_many_files(tmp_path, monkeypatch):
    files = [tmp_path / f"f{i}" for i in range(fsutil.SYNC_EACH_MAX + 1)]
    for f in files:
        f.write_text("data")
    record = _record_syncs(monkeypatch)
    fsutil.sync_files(files)
    assert record["syncfs"] == [str(tmp_path)] and record["fsync"] == [] and record["dirs"] == []


def test_sync_files_with_nothing_written_does_nothing(monkeypatch):
    record = _record_syncs(monkeypatch)
    fsutil.sync_files([])
    assert record == {"fsync": [], "dirs": [], "syncfs": []}
