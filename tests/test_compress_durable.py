"""The compress stage makes durable what it wrote to the store, before the manifest names it, and
nothing else (no syncfs of the whole file system for a few files). Asserted on the recorded calls."""
import pathlib

from wwfast import fsutil
from wwfast.define import settings as settings_mod
from wwfast.publish import manifest as publish, publisher

from compress_support import BuildTree, write_settings


def _publish(conf, state, memory, calls):
    publisher.run(str(state), settings_mod.load(str(conf)), memory, progress=False)
    return calls.pop()


def test_the_store_files_written_are_synced_before_the_manifest(tmp_path, monkeypatch):
    conf, state = tmp_path / "conf", tmp_path / "state"
    write_settings(conf)
    tree = BuildTree(state, count=3)
    tree.write_all()
    calls = []
    manifest = pathlib.Path(publish.manifest_path(str(state)))

    def record(paths, dirs=()):
        calls.append((sorted({str(p) for p in paths}), [str(d) for d in dirs], manifest.exists()))
    monkeypatch.setattr(fsutil, "sync_files", record)
    store = pathlib.Path(publish.store_dir(str(state)))
    memory = {}
    paths, dirs, manifest_existed = _publish(conf, state, memory, calls)
    assert paths == sorted(str(p) for p in store.iterdir())
    assert dirs == [str(store)] and not manifest_existed

    before = set(store.iterdir())
    tree.bump_runtime("n0002")
    paths, dirs, manifest_existed = _publish(conf, state, memory, calls)
    new = set(store.iterdir()) - before
    assert len(new) == 2 and paths == sorted(map(str, new))     # n0002's runtime .zst and .gz only
    assert dirs == [str(store)] and manifest_existed
