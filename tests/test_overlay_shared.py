"""Secure mode: the node-independent part of the system overlay is packed once (overlay_shared), the node's
own archive holds what its templates render, and the two, unpacked in order by GNU cpio, give the tree the
one archive gave. The compress stage publishes both parts as one artifact (two zstd frames, one gzip
member) named by the hash of both parts' bytes.
"""
import hashlib
import os
import pathlib
import subprocess

from helpers.newc import split_archives
from helpers.overlay_fixtures import fake_ssh_keys, fixture_settings, listing, make_images, make_node, netdev
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.builder.overlay_items import Item, pack
from wwfast.define.settings import Settings
from wwfast.publish import build_outputs
from wwfast.publish.store import StoreWriter


def _nodes(count, first_octet=10):
    return {f"s{i}": make_node(f"s{i}", **{
        "system overlay": ["wwinit", "hostname", "hosts", "early", "site"], "runtime overlay": ["hosts"],
        "network devices": {"default": netdev(device="eth0", hwaddr=f"52:54:00:00:20:{i:02x}",
                                              ipaddr=f"10.0.{first_octet}.{i}", netmask="255.255.0.0")}})
        for i in range(count)}


def _site(conf):
    """Overlays that fight over paths: a per-node template over wwinit's static /init (the template wins),
    a static file over an earlier overlay's per-node template (the static file wins), and a per-node file
    in a 0700 directory of a static overlay."""
    files = {"early/etc/motd.j2": "early {{ node.id }}\n", "site/etc/motd": "static motd\n",
             "site/etc/private/node.j2": "{{ node.id }} only\n", "site/init.j2": "#!/bin/sh\n# {{ node.id }}\n"}
    for rel, text in files.items():
        path = conf / "overlays" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chmod(conf / "overlays/site/etc/private", 0o700)


def _build(tmp_path, nodes, memory, secure=True):
    conf, state = tmp_path / "conf", tmp_path / "state"
    if not conf.exists():
        conf.mkdir(parents=True)
        make_images(state)
        fake_ssh_keys(state)
        _site(conf)
    result = build_overlays(conf, state, fixture_settings(secure=secure), nodes, memory=memory, workers=1)
    return state, result


def _unpacked(tmp, blobs):
    """The tree GNU cpio leaves from `blobs` unpacked in order (each archive in them on its own)."""
    tmp.mkdir()
    for part in (archive for blob in blobs for archive in split_archives(blob)):
        subprocess.run(["cpio", "-idmu", "--quiet"], input=part, cwd=tmp, check=True)
    out = {}
    for path in sorted(tmp.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(tmp))] = (oct(st.st_mode), None if path.is_dir() else
                                           os.readlink(path) if path.is_symlink() else path.read_bytes())
    return out


def test_shared_part_once_and_the_same_tree_as_one_archive(tmp_path):
    nodes = _nodes(6)
    secure_memory, plain_memory = {}, {}
    state, result = _build(tmp_path, nodes, secure_memory)
    shared = set(result.shared.values())
    assert len(shared) == 1 and set(result.shared) == set(nodes)
    shared_bytes = (state / "build" / shared.pop()).read_bytes()
    assert "0:0 /etc/hosts" in listing(shared_bytes) and "0:0 /wwinit/init.d" in listing(shared_bytes)
    for node in nodes:
        own = pathlib.Path(archive_path(state, node, "system")).read_bytes()
        text = listing(own)
        assert "/etc/hosts" not in text and "/wwinit/init.d" not in text    # only in the shared part
        assert f"=== f 0644 0:0 /etc/hostname\n{node}\n" in text
        assert "=== d 0700 0:0 /etc/private" in text   # a parent keeps its mode from the whole overlay
    # The same nodes outside secure mode as one archive (hosts via runtime): the system tree, with the
    # runtime archive unpacked after it, is the same file for file, mode for mode.
    plain_state, _ = _build(tmp_path / "plain", nodes, plain_memory, secure=False)
    for node in nodes:
        runtime = pathlib.Path(archive_path(state, node, "runtime")).read_bytes()
        split = _unpacked(tmp_path / f"{node}-split", [shared_bytes,
                                                       pathlib.Path(archive_path(state, node, "system")).read_bytes(),
                                                       runtime])
        whole = _unpacked(tmp_path / f"{node}-whole", [
            pathlib.Path(archive_path(plain_state, node, "system")).read_bytes(),
            pathlib.Path(archive_path(plain_state, node, "runtime")).read_bytes()])
        assert split.pop("wwinit/config") != whole.pop("wwinit/config")   # WWSECURE differs, nothing else
        assert split == whole
        assert split["init"][1] == f"#!/bin/sh\n# {node}\n".encode()       # the node's template won
        assert split["etc/motd"][1] == b"static motd\n"
        assert split["etc/private/node"] == ("0o100644", f"{node} only\n".encode())


def test_a_changed_address_makes_a_new_shared_part_and_removes_the_old(tmp_path):
    memory = {}
    state, first = _build(tmp_path, _nodes(4), memory)
    old = set(first.shared.values()).pop()
    _, again = _build(tmp_path, _nodes(4), memory)
    assert again.rebuilt == [] and set(again.shared.values()) == {old}
    _, moved = _build(tmp_path, _nodes(4, first_octet=11), memory)   # every address moved: hosts changed
    new = set(moved.shared.values()).pop()
    assert new != old and sorted(moved.rebuilt) == sorted(_nodes(4))
    assert moved.shared_removed == [os.path.basename(old)]
    assert not (state / "build" / old).exists() and "10.0.11.3" in listing((state / "build" / new).read_bytes())


def test_publish_joins_the_parts_into_one_artifact(tmp_path):
    """StoreWriter: zstd as two frames the zstd CLI reads back as both parts' bytes, gzip as one member
    gunzip reads back the same, both named by the sha256 of both parts; a new shared part, same own
    part (same stat), is hashed again."""
    base = tmp_path / "state" / "build"
    (base / "overlays/.shared").mkdir(parents=True)
    (base / "overlays/n1").mkdir()
    shared = pack({"etc/hosts": Item("etc/hosts", b"10.0.0.1 n1\n" * 500, 0o644, 0, 0)})
    own = pack({"etc/hostname": Item("etc/hostname", b"n1\n", 0o644, 0, 0)})
    (base / "overlays/.shared/system-a.cpio").write_bytes(shared)
    (base / "overlays/n1/system.cpio").write_bytes(own)
    build = {"nodes": {"n1": {"system": "overlays/n1/system.cpio", "system_shared": "overlays/.shared/system-a.cpio",
                              "image_cpio": "i", "runtime": "r", "kernel": "k", "ipxe": "p"}}}
    prefixes = build_outputs.prefixes(build)
    inputs = {"overlays/n1/system.cpio": "archive", "overlays/.shared/system-a.cpio": "prefix"}
    settings = Settings(secure=True, gzip=True, zstd_level=3, threads=1)
    writer = StoreWriter(tmp_path / "state", settings, False, {}, set(), prefixes)
    hashed, fused = writer.hash_inputs(inputs, {})
    sha = hashlib.sha256(shared + own).hexdigest()
    assert fused == [] and hashed["overlays/n1/system.cpio"][1] == sha
    entries = writer.fill(inputs, hashed, {})
    assert set(entries) == {"overlays/n1/system.cpio"}     # the shared part is not published on its own
    store = tmp_path / "state" / "store"
    zst, gz = store / f"{sha}.cpio.zst", store / f"{sha}.cpio.gz"
    assert subprocess.run(["zstd", "-dc", str(zst)], capture_output=True, check=True).stdout == shared + own
    assert subprocess.run(["gzip", "-dc", str(gz)], capture_output=True, check=True).stdout == shared + own
    assert zst.read_bytes().count(b"\x28\xb5\x2f\xfd") >= 2        # a frame per part
    # the record keeps the shared part's hash: a new shared part is a new archive, own file untouched
    key = hashed["overlays/n1/system.cpio"][0]
    known = {"overlays/n1/system.cpio": key + [sha, hashed["overlays/.shared/system-a.cpio"][1]],
             "overlays/.shared/system-a.cpio": hashed["overlays/.shared/system-a.cpio"][0]
             + [hashed["overlays/.shared/system-a.cpio"][1]]}
    again, _ = StoreWriter(tmp_path / "state", settings, False, {}, set(), prefixes).hash_inputs(inputs, known)
    assert again["overlays/n1/system.cpio"][1] == sha
    other = pack({"etc/hosts": Item("etc/hosts", b"10.0.0.2 n1\n" * 500, 0o644, 0, 0)})
    (base / "overlays/.shared/system-b.cpio").write_bytes(other)
    build["nodes"]["n1"]["system_shared"] = "overlays/.shared/system-b.cpio"
    inputs_b = {"overlays/n1/system.cpio": "archive", "overlays/.shared/system-b.cpio": "prefix"}
    moved, _ = StoreWriter(tmp_path / "state", settings, False, {}, set(),
                           build_outputs.prefixes(build)).hash_inputs(inputs_b, known)
    assert moved["overlays/n1/system.cpio"][1] == hashlib.sha256(other + own).hexdigest()


def test_gzip_member_after_a_prefix_is_one_member_of_both():
    """A member continuing a GzipPrefix is one gzip member (iPXE's imgextract reads only one) that any
    gunzip reads as prefix + rest, across block boundaries on both sides and with the thread pool."""
    import io
    import random
    import zlib
    from wwfast.publish import compress
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(8)) for _ in range(500)]
    text = lambda n: b" ".join(rng.choice(words) for _ in range(n // 9))[:n]   # noqa: E731
    encoder = compress.GzipEncoder(6, threads=2)
    for head_size, rest_size in ((10, 100), (compress.GZIP_BLOCK + 5, 3000), (2 * compress.GZIP_BLOCK, 0),
                                 (70_000, 2 * compress.GZIP_BLOCK + 1)):
        head, rest = text(head_size), text(rest_size)
        out = io.BytesIO()
        encoder.compress(io.BytesIO(rest), out, after=encoder.prefix(head))
        member = zlib.decompressobj(wbits=31)
        assert member.decompress(out.getvalue()) == head + rest and member.eof and member.unused_data == b""
        gunzip = subprocess.run(["gzip", "-dc"], input=out.getvalue(), capture_output=True, check=True)
        assert gunzip.stdout == head + rest
