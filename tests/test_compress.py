"""Compression and publishing, checked with the real zstd, gzip and pigz tools.

Frames must decode with the zstd CLI, carry their content size and a window the kernel accepts
(<= 128 MiB); gzip members must pass gzip -t and pigz -t; the store dedupes by input content; store
files no longer named survive a grace period; the lock keeps two runs apart.
"""
import io
import json
import os
import pathlib
import pty
import re
import subprocess
import sys

import pytest
import zstandard

from wwfast.publish import compress, manifest as publish
from wwfast.publish.store import FUSE_MIN
from wwfast import cpio, fsutil, runner
from wwfast.publish.progress import Progress

from compress_support import BuildTree, check_published, run_stage, write_settings


def sample_data(size):
    """Compressible but not trivial: text-like lines with some noise, like an OS tree."""
    rng = __import__("random").Random(size)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
        if rng.random() < 0.05:
            out += os.urandom(64)
    return bytes(out[:size])


def zstd_file(tmp_path, data, level=3, threads=0, name="x.zst"):
    src, dst = tmp_path / "in", tmp_path / name
    src.write_bytes(data)
    with open(src, "rb", buffering=0) as f, open(dst, "wb") as o:
        compress.ZstdEncoder(level, threads).compress(f, o, len(data))
    return dst


def zstd_cli_list(path):
    out = subprocess.run(["zstd", "-lv", str(path)], capture_output=True, text=True, check=True).stdout
    window = re.search(r"Window Size:.*\((\d+) B\)", out)
    content = re.search(r"Decompressed Size:.*\((\d+) B\)", out)
    frames = re.search(r"Zstandard Frames: (\d+)", out)
    return (int(window.group(1)) if window else None, int(content.group(1)) if content else None,
            int(frames.group(1)))


# ---- the codecs ----

@pytest.mark.parametrize("size", [0, 1, 5000, 6 << 20])
def test_zstd_frame_decodes_with_cli_and_states_size(tmp_path, size):
    data = sample_data(size)
    dst = zstd_file(tmp_path, data)
    out = subprocess.run(["zstd", "-dc", str(dst)], capture_output=True, check=True).stdout
    assert out == data
    window, content, frames = zstd_cli_list(dst)
    assert frames == 1                       # the kernel takes one stream per archive
    assert content == size                   # content size in the frame header
    params = zstandard.get_frame_parameters(dst.read_bytes())
    assert params.content_size == size and params.has_checksum
    assert params.window_size <= 128 << 20
    if size > 2 << 20:
        assert window == 2 << 20             # level 3's window, as the CLI's


def test_zstd_window_capped_for_the_kernel(tmp_path, monkeypatch):
    # Every stock level fits in 128 MiB; the cap must still bite when a level would exceed it.
    assert all(compress.zstd_params(level, 1).window_log <= 27 for level in range(-5, 23))
    monkeypatch.setattr(compress, "ZSTD_WINDOW_LOG_MAX", 20)
    dst = zstd_file(tmp_path, sample_data(4 << 20), level=3)
    window, content, _ = zstd_cli_list(dst)
    assert window == 1 << 20 and content == 4 << 20
    assert subprocess.run(["zstd", "-t", "-q", str(dst)]).returncode == 0


def test_zstd_same_bytes_whatever_the_thread_count(tmp_path):
    data = sample_data(3 << 20)
    outs = {zstd_file(tmp_path, data, threads=t, name=f"{t}.zst").read_bytes() for t in (1, 2, 3)}
    assert len(outs) == 1


@pytest.mark.parametrize("size", [0, 70000, (3 << 20) + 12345])
def test_gzip_passes_gzip_and_pigz(tmp_path, size):
    data = sample_data(size)
    outputs = set()
    for threads in (1, 2, 4):
        dst = tmp_path / f"{threads}.gz"
        with open(dst, "wb") as o:
            compress.GzipEncoder(6, threads).compress(io.BytesIO(data), o)
        for tool in (["gzip", "-t"], ["pigz", "-t"]):
            assert subprocess.run(tool + [str(dst)], capture_output=True).returncode == 0, tool
        assert subprocess.run(["gzip", "-dc", str(dst)], capture_output=True, check=True).stdout == data
        outputs.add(dst.read_bytes())
    assert len(outputs) == 1                 # pigz's blocking: same bytes for any thread count
    size_gz = len(outputs.pop())
    ref = subprocess.run(["gzip", "-6", "-c"], input=data, capture_output=True, check=True).stdout
    assert size_gz <= len(ref) * 1.02 + 64   # the 32 KiB dictionaries keep the ratio of one stream


def test_progress_draws_only_on_a_terminal():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = Progress(100 << 20, "compress", stream=tty, delay=0)
        bar.advance(50 << 20)
        bar.close()
    drawn = os.read(master, 4096).decode()
    os.close(master)
    assert "compress [" in drawn and "50.0%" in drawn
    quiet = io.StringIO()             # not a terminal
    bar = Progress(100, "compress", stream=quiet, delay=0)
    bar.advance(100)
    bar.close()
    assert quiet.getvalue() == ""


# ---- the stage ----

@pytest.fixture
def cluster(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    write_settings(conf)
    tree = BuildTree(state, count=4, image_bytes=None)
    tree.image_bytes = cpio_of(sample_data(1 << 20))
    tree.write_all()
    return conf, state, tree


def cpio_of(data):
    buf = io.BytesIO()
    w = cpio.NewcWriter(buf, mtime=0)
    w.add_dir("usr", mtime=0)
    w.add_file("usr/blob", data, mtime=0)
    w.close()
    return buf.getvalue()


def store_state(state):
    store = pathlib.Path(publish.store_dir(str(state)))
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in store.iterdir()}


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_publishes_every_node_and_decodes_to_the_build(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    manifest = check_published(state)
    store = pathlib.Path(publish.store_dir(str(state)))
    build = json.loads((tree.build / "build.json").read_text())
    assert sorted(manifest["nodes"]) == tree.ids
    assert manifest["unknown_ipxe"]["raw"]["sha256"] == fsutil.sha256_file(tree.build / "ipxe/unknown.ipxe")
    for node_id, entry in manifest["nodes"].items():
        b = build["nodes"][node_id]
        assert entry["macs"] and entry["addresses"] and entry["asset_key"] == ""
        for artifact, key in (("image", "image_cpio"), ("system", "system"), ("runtime", "runtime")):
            original = (tree.build / b[key]).read_bytes()
            encodings = entry["artifacts"][artifact]
            assert set(encodings) == {"zst", "gz"}
            assert encodings["zst"]["file"] == fsutil.sha256_bytes(original) + ".cpio.zst"
            zst = store / encodings["zst"]["file"]
            gz = store / encodings["gz"]["file"]
            assert subprocess.run(["zstd", "-dc", str(zst)], capture_output=True, check=True).stdout == original
            assert subprocess.run(["gzip", "-dc", str(gz)], capture_output=True, check=True).stdout == original
        for artifact, key in (("kernel", "kernel"), ("ipxe", "ipxe")):
            raw = entry["artifacts"][artifact]["raw"]
            assert (store / raw["file"]).read_bytes() == (tree.build / b[key]).read_bytes()
    assert manifest["settings"] == {"secure": True, "update_interval": 60}
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", manifest["generation"])


def test_second_run_is_current_and_touches_nothing(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    manifest_before = pathlib.Path(publish.manifest_path(str(state))).read_bytes()
    files_before = store_state(state)
    result = ok(run_stage(conf, state, "-v"))
    assert "compress: current" in result.stdout
    assert pathlib.Path(publish.manifest_path(str(state))).read_bytes() == manifest_before
    assert store_state(state) == files_before


def test_quiet_without_a_terminal(cluster):
    conf, state, tree = cluster
    result = ok(run_stage(conf, state))
    assert result.stdout == "" and result.stderr == ""


def test_unchanged_inputs_are_not_compressed_again(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    before = store_state(state)
    tree.bump_runtime("n0002")
    tree.write_image()      # rewritten with the same bytes: a new inode, the same content
    result = ok(run_stage(conf, state, "-v"))
    # image + kernel + n0002's system, runtime, ipxe + unknown.ipxe were rewritten (new inodes)
    assert "6 build output(s) changed: images/demo.cpio, images/demo.kernel" in result.stdout
    assert "2 store files written" in result.stdout             # the new runtime's .zst and .gz
    after = store_state(state)
    assert {n: v for n, v in after.items() if n in before} == before   # nothing rewritten
    assert len(set(after) - set(before)) == 2
    manifest = check_published(state)
    runtimes = {n: e["artifacts"]["runtime"]["zst"]["file"] for n, e in manifest["nodes"].items()}
    assert runtimes["n0002"] != runtimes["n0001"] == runtimes["n0003"]     # dedupe: one file for equal overlays


def test_settings_change_reruns_and_drops_gzip(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    write_settings(conf, gzip=False)
    result = ok(run_stage(conf, state, "-v"))
    assert "settings changed: gzip True -> False" in result.stdout
    manifest = check_published(state)
    assert all(set(e["artifacts"]["image"]) == {"zst"} for e in manifest["nodes"].values())


def test_unreferenced_store_files_outlive_the_grace_period(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    old = check_published(state)["nodes"]["n0001"]["artifacts"]["runtime"]
    for n in tree.ids:
        tree.bump_runtime(n)
    ok(run_stage(conf, state, "--grace", "3600"))
    store = pathlib.Path(publish.store_dir(str(state)))
    retired = [old["zst"]["file"], old["gz"]["file"]]
    assert all((store / name).exists() for name in retired)      # a node may be downloading them
    memory = json.loads((state / "stages" / "compress.stamp").read_text())["memory"]
    assert set(retired) <= set(memory["retired"])
    ok(run_stage(conf, state, "--grace", "3600"))                   # current: still kept
    assert all((store / name).exists() for name in retired)
    result = ok(run_stage(conf, state, "--grace", "0", "-v"))       # current, but the grace is over
    assert "compress: current" in result.stdout and "removed 2 store files" in result.stdout
    assert not any((store / name).exists() for name in retired)
    check_published(state)


def test_leftover_temp_files_are_removed(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    store = pathlib.Path(publish.store_dir(str(state)))
    leftover = store / ".abc.cpio.zst.x1y2.tmp"
    leftover.write_bytes(b"half a file")
    ok(run_stage(conf, state))
    assert not leftover.exists()


def test_lock_no_wait_exits_with_a_message_and_wait_waits(cluster):
    conf, state, tree = cluster
    tree.bump_runtime("n0001")
    with runner.stage_locks(str(state), ["build", "compress"]):
        busy = run_stage(conf, state, "--no-wait")
        assert busy.returncode == 75
        assert f"another build run (pid {os.getpid()}) holds" in busy.stderr and "--no-wait" in busy.stderr
        assert publish.load_manifest(str(state)) is None
        waiting = subprocess.Popen([sys.executable, "-m", "stages.compress", "--conf", str(conf),
                                    "--state", str(state), "-v"], cwd=pathlib.Path(__file__).parent.parent,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        # The stage says it waits before it blocks on the lock: read that line (no sleep-and-hope).
        said = ""
        while "waiting for it to finish" not in said:
            line = waiting.stdout.readline()
            assert line, f"compress ended without saying it waits: {said}{waiting.stderr.read()}"
            said += line
        assert waiting.poll() is None              # blocked on the lock, not interleaving
        assert publish.load_manifest(str(state)) is None
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    check_published(state)


def test_missing_build_is_a_clear_error_and_keeps_the_manifest(cluster):
    conf, state, tree = cluster
    ok(run_stage(conf, state))
    before = pathlib.Path(publish.manifest_path(str(state))).read_bytes()
    (tree.build / "overlays/n0003/system.cpio").unlink()
    result = run_stage(conf, state)
    assert result.returncode == 1
    assert "overlays/n0003/system.cpio" in result.stderr and "build stage" in result.stderr
    assert pathlib.Path(publish.manifest_path(str(state))).read_bytes() == before
    (tree.build / "build.json").write_text("{not json")
    result = run_stage(conf, state)
    assert result.returncode == 1 and "build.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_large_archive_is_hashed_while_compressed(cluster):
    conf, state, tree = cluster
    big = cpio_of(os.urandom(1 << 20) * (FUSE_MIN // (1 << 20) + 2))
    assert len(big) > FUSE_MIN
    tree.image_bytes = big
    tree.write_image()
    result = ok(run_stage(conf, state, "-v"))
    manifest = check_published(state)
    store = pathlib.Path(publish.store_dir(str(state)))
    image = manifest["nodes"]["n0001"]["artifacts"]["image"]
    assert image["zst"]["file"] == fsutil.sha256_bytes(big) + ".cpio.zst"     # named by the input's hash
    assert subprocess.run(["zstd", "-dc", str(store / image["zst"]["file"])], capture_output=True,
                          check=True).stdout == big
    assert subprocess.run(["gzip", "-dc", str(store / image["gz"]["file"])], capture_output=True,
                          check=True).stdout == big
    before = store_state(state)
    tree.write_image()       # same bytes, new inode: compressed again (unknown until hashed), not stored twice
    result = ok(run_stage(conf, state, "-v"))
    assert "0 store files written" in result.stdout, result.stdout
    assert store_state(state) == before              # the stored file was kept, the temp one dropped
    assert not [p for p in store.iterdir() if p.name.endswith(".tmp")]


def test_manifest_comes_from_build_json_alone(cluster):
    """What the manifest needs of a node (MACs, addresses, asset key) travels in build.json: compress never
    reads the node database."""
    conf, state, tree = cluster
    os.unlink(state / "define" / "nodes.json")
    ok(run_stage(conf, state))
    manifest = json.loads((state / "publish" / "manifest.json").read_text())
    node = manifest["nodes"]["n0001"]
    assert node["macs"] == ["52:54:00:00:00:01"] and node["addresses"] == ["10.0.0.1"] and node["asset_key"] == ""
    build = json.loads((tree.build / "build.json").read_text())
    del build["nodes"]["n0002"]["macs"]
    (tree.build / "build.json").write_text(json.dumps(build))
    result = run_stage(conf, state)
    assert result.returncode == 1 and "node 'n0002' lacks macs: run the build stage" in result.stderr


def test_hard_linked_archives_are_hashed_and_compressed_once(tmp_path, monkeypatch):
    """The build hard-links identical archives (a runtime overlay the same on every node): the store
    gets one file per encoding, made once, and every name's entry is that file's; a file's hash is read
    once however many names it has."""
    from wwfast.define.settings import Settings
    from wwfast.publish import store
    base = tmp_path / "state" / "build" / "overlays"
    (base / "n0").mkdir(parents=True)
    (base / "n0" / "runtime.cpio").write_bytes(sample_data(300_000))
    inputs = {"overlays/n0/runtime.cpio": "archive"}
    for i in range(1, 4):
        (base / f"n{i}").mkdir()
        os.link(base / "n0" / "runtime.cpio", base / f"n{i}" / "runtime.cpio")
        inputs[f"overlays/n{i}/runtime.cpio"] = "archive"
    reads = []

    def counting_open(path, *args, **kw):
        reads.append(path)
        return open(path, *args, **kw)
    monkeypatch.setattr(store, "open", counting_open, raising=False)
    writer = store.StoreWriter(tmp_path / "state", Settings(gzip=True, threads=1), False, {}, set())
    hashed, _ = writer.hash_inputs(inputs, {})
    entries = writer.fill(inputs, hashed, {})
    assert len({h[1] for h in hashed.values()}) == 1
    assert writer.compressed == 2 and len(reads) == 1 + 2      # one hash read, one read per encoding
    assert all(entries[rel] == entries["overlays/n0/runtime.cpio"] for rel in inputs)
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "state" / "store").iterdir()) == ["cpio.gz", "cpio.zst"]
