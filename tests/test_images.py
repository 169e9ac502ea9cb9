"""Image import from every source kind, with real tar/zstd tools building the sources; bad sources fail clearly."""
import gzip
import hashlib
import io
import json
import os
import pathlib
import stat
import subprocess
import sys
import tarfile

import pytest
import zstandard

from helpers.trees import make_sample_tree, snapshot
from wwfast.builder import images

MT = 1_600_000_000


# ---- building sources --------------------------------------------------------------------------

def layer_tar(entries):
    """Tar bytes from (name, kind, arg, mode, uid, gid) tuples; kind: dir, file, sym, hard, chr, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, arg, mode, uid, gid in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, MT
            data = None
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "file":
                data = arg
                ti.size = len(arg)
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, arg
            elif kind == "chr":
                ti.type, (ti.devmajor, ti.devminor) = tarfile.CHRTYPE, arg
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


LAYER1 = [
    ("etc", "dir", None, 0o755, 0, 0),
    ("etc/a", "file", b"old a\n", 0o644, 10, 20),
    ("etc/b", "file", b"b\n", 0o600, 0, 0),
    ("etc/gone", "file", b"to be whited out\n", 0o644, 0, 0),
    ("opq", "dir", None, 0o750, 0, 0),
    ("opq/old", "file", b"hidden by the opaque marker\n", 0o644, 0, 0),
    ("opq/sub", "dir", None, 0o755, 0, 0),
    ("opq/sub/deep", "file", b"also hidden\n", 0o644, 0, 0),
    ("usr", "dir", None, 0o755, 0, 0),
    ("usr/bin", "dir", None, 0o755, 0, 0),
    ("usr/bin/tool", "file", b"#!/bin/sh\necho tool\n", 0o755, 0, 0),
    ("usr/bin/hard", "hard", "usr/bin/tool", 0o755, 0, 0),
    ("usr/bin/link", "sym", "tool", 0o777, 0, 0),
    ("dev", "dir", None, 0o755, 0, 0),
    ("dev/null", "chr", (1, 3), 0o666, 0, 0),
    ("run", "dir", None, 0o755, 0, 0),
    ("run/fifo", "fifo", None, 0o640, 0, 0),
]
LAYER2 = [
    ("./etc/.wh.gone", "file", b"", 0o644, 0, 0),
    ("./etc/a", "file", b"new a\n", 0o640, 10, 20),
    ("./etc/b", "sym", "a", 0o777, 0, 0),
    ("./opq/.wh..wh..opq", "file", b"", 0o644, 0, 0),
    ("./opq/new", "file", b"from layer 2\n", 0o644, 0, 0),
]


def check_layered_tree(root):
    root = pathlib.Path(root)
    assert (root / "etc/a").read_bytes() == b"new a\n"
    st_a = os.stat(root / "etc/a")
    assert (stat.S_IMODE(st_a.st_mode), st_a.st_uid, st_a.st_gid, st_a.st_mtime) == (0o640, 10, 20, MT)
    assert os.readlink(root / "etc/b") == "a"
    assert not os.path.lexists(root / "etc/gone") and not os.path.lexists(root / "etc/.wh.gone")
    assert sorted(os.listdir(root / "opq")) == ["new"]
    assert stat.S_IMODE(os.stat(root / "opq").st_mode) == 0o750
    assert os.stat(root / "usr/bin/tool").st_ino == os.stat(root / "usr/bin/hard").st_ino
    assert os.readlink(root / "usr/bin/link") == "tool"
    st_null = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st_null.st_mode) and os.major(st_null.st_rdev) == 1 and os.minor(st_null.st_rdev) == 3
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert os.stat(root / "etc").st_mtime == MT


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_oci_layout(dest, layers):
    """An OCI image layout: layer 1 gzip, layer 2 zstd, config, manifest, index."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        (blobs / sha(data)).write_bytes(data)
        return {"digest": "sha256:" + sha(data), "size": len(data)}

    compressed = [gzip.compress(layers[0], mtime=0), zstandard.ZstdCompressor().compress(layers[1])]
    types = ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd"]
    layer_descs = [dict(put(c), mediaType=t) for c, t in zip(compressed, types)]
    config = put(json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(x) for x in layers]}}).encode())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                           "layers": layer_descs}).encode()
    mdesc = put(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        dict(mdesc, mediaType="application/vnd.oci.image.manifest.v1+json",
             platform={"architecture": "amd64", "os": "linux"})]}))
    return dest


def make_docker_save(path, layers):
    """The classic `docker save` layout: <id>/layer.tar per layer and manifest.json."""
    with tarfile.open(path, "w") as tf:
        names = []
        for data in layers:
            name = f"{sha(data)}/layer.tar"
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
            names.append(name)
        cfg = b'{"architecture": "amd64", "os": "linux"}'
        for name, data in (("cfg.json", cfg),
                           ("manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["demo:latest"],
                                                          "Layers": names}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def tar_dir(src, out, compressor=None):
    """Tarball of a tree made by GNU tar (numeric owners), optionally piped through gzip/zstd."""
    tar = subprocess.run(["tar", "--numeric-owner", "-C", str(src), "-cf", "-", "."], capture_output=True, check=True)
    data = tar.stdout
    if compressor:
        data = subprocess.run(compressor, input=data, capture_output=True, check=True).stdout
    out.write_bytes(data)
    return out


def quiet(*_):
    pass


def no_image_left(state, name):
    store = state / "images"
    leftovers = [n for n in os.listdir(store) if not n.endswith(".lock")] if store.exists() else []
    assert name not in images.list_images(state) and leftovers == [], leftovers


# ---- tests -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample_tree(tmp_path_factory.mktemp("src") / "tree")


@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "tar.zst"])
def test_root_tree_sources_keep_everything(sample, tmp_path, kind):
    if kind == "dir":
        source = sample
    else:
        comp = {"tar": None, "tar.gz": ["gzip", "-c"], "tar.zst": ["zstd", "-q", "-c"]}[kind]
        source = tar_dir(sample, tmp_path / f"img.{kind}", comp)
    info = images.import_image(source, "img", tmp_path / "state", log=quiet)
    root = images.image_root(tmp_path / "state", "img")
    assert snapshot(root) == snapshot(sample)       # owners, modes, times, devices, links, hard links
    assert info["kind"] == ("dir" if kind == "dir" else "tar")
    assert images.list_images(tmp_path / "state") == ["img"]
    on_disk = json.loads((tmp_path / "state/images/img/image.json").read_text())
    assert on_disk == info and on_disk["entries"] == len(snapshot(sample))


def test_dir_and_its_tarball_have_the_same_fingerprint(sample, tmp_path):
    a = images.import_image(sample, "a", tmp_path / "s", log=quiet)
    b = images.import_image(tar_dir(sample, tmp_path / "t.tar.zst", ["zstd", "-q", "-c"]), "b", tmp_path / "s",
                            log=quiet)
    assert a["fingerprint"] == b["fingerprint"]
    (tmp_path / "s/images/b/rootfs/etc/hosts").write_bytes(b"changed\n")
    assert images.tree_digest(tmp_path / "s/images/b/rootfs")[0] != a["fingerprint"]


@pytest.mark.parametrize("kind", ["oci-dir", "oci-tar", "docker-archive"])
def test_container_layers_whiteouts_opaque(tmp_path, kind):
    layers = [layer_tar(LAYER1), layer_tar(LAYER2)]
    if kind == "docker-archive":
        source = make_docker_save(tmp_path / "saved.tar", layers)
    else:
        source = make_oci_layout(tmp_path / "oci", layers)
        if kind == "oci-tar":
            subprocess.run(["tar", "-C", str(source), "-cf", str(tmp_path / "oci.tar"), "."], check=True)
            source = tmp_path / "oci.tar"
    info = images.import_image(source, "layered", tmp_path / "state", log=quiet)
    assert (info["kind"], info["layers"]) == (kind, 2)
    check_layered_tree(images.image_root(tmp_path / "state", "layered"))


def test_update_replaces_and_existing_needs_update(tmp_path):
    state = tmp_path / "state"
    (tmp_path / "v1/etc").mkdir(parents=True)
    (tmp_path / "v1/etc/version").write_text("1\n")
    images.import_image(tmp_path / "v1", "img", state, log=quiet)
    (tmp_path / "v1/etc/version").write_text("2\n")
    with pytest.raises(images.ImageError, match="already exists; add --update"):
        images.import_image(tmp_path / "v1", "img", state, log=quiet)
    assert (state / "images/img/rootfs/etc/version").read_text() == "1\n"
    images.import_image(tmp_path / "v1", "img", state, update=True, log=quiet)
    assert (state / "images/img/rootfs/etc/version").read_text() == "2\n"
    assert sorted(n for n in os.listdir(state / "images") if not n.endswith(".lock")) == ["img"]




BAD_SOURCES = {
    "missing": (lambda t: t / "nope", "no such file or directory"),
    "corrupt-gzip": (lambda t: _write(t / "c.tar.gz", gzip.compress(layer_tar(LAYER1))[:300]), "corrupt or truncated"),
    "unknown-format": (lambda t: _write(t / "notes.txt", b"just some text, not an archive\n" * 50),
                       "not a tar archive, OCI layout or docker save archive"),
    "dotdot-member": (lambda t: _write(t / "evil.tar", layer_tar([("etc", "dir", None, 0o755, 0, 0),
                                                                   ("etc/../../escape", "file", b"x", 0o644, 0, 0)])),
                      "climbs out of the image with '..': refused"),
    "absolute-member": (lambda t: _write(t / "abs.tar", layer_tar([("/etc/passwd", "file", b"x", 0o644, 0, 0)])),
                        "absolute path: refused"),
    "through-symlink": (lambda t: _write(t / "sym.tar", layer_tar([("lib", "sym", "/", 0o777, 0, 0),
                                                                    ("lib/tmp/pwned", "file", b"x", 0o644, 0, 0)])),
                        "written through the symlink 'lib': refused"),
    "hardlink-out": (lambda t: _write(t / "hl.tar", layer_tar([("x", "hard", "../../etc/passwd", 0o644, 0, 0)])),
                     "climbs out of the image"),
    "docker-layer-dotdot": (lambda t: make_docker_save(t / "d.tar", [layer_tar(LAYER1), layer_tar(
        [("../outside", "file", b"x", 0o644, 0, 0)])]), "climbs out of the image with '..': refused"),
}


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_bad_sources_fail_clearly_and_leave_nothing(tmp_path, case):
    make, message = BAD_SOURCES[case]
    source = make(tmp_path)
    state = tmp_path / "state"
    with pytest.raises(images.ImageError) as info:
        images.import_image(source, "bad", state, log=quiet)
    assert message in str(info.value)
    assert str(source) in str(info.value)
    no_image_left(state, "bad")
    assert not os.path.exists("/tmp/pwned")


def test_corrupt_oci_blob_is_detected(tmp_path):
    source = make_oci_layout(tmp_path / "oci", [layer_tar(LAYER1), layer_tar(LAYER2)])
    manifest_blob = json.loads((source / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    layer = json.loads((source / "blobs/sha256" / manifest_blob).read_text())["layers"][0]["digest"].split(":")[1]
    blob = source / "blobs/sha256" / layer
    data = bytearray(gzip.decompress(blob.read_bytes()))
    blob.write_bytes(gzip.compress(bytes(data).replace(b"old a", b"evil!"), mtime=0))
    with pytest.raises(images.ImageError, match="does not match its sha256 digest"):
        images.import_image(source, "x", tmp_path / "state", log=quiet)
    no_image_left(tmp_path / "state", "x")


def test_failed_update_keeps_the_old_image(tmp_path):
    state = tmp_path / "state"
    (tmp_path / "good/etc").mkdir(parents=True)
    (tmp_path / "good/etc/ok").write_text("ok\n")
    images.import_image(tmp_path / "good", "img", state, log=quiet)
    bad = _write(tmp_path / "bad.tar", layer_tar([("/abs", "file", b"x", 0o644, 0, 0)]))
    with pytest.raises(images.ImageError):
        images.import_image(bad, "img", state, update=True, log=quiet)
    assert (state / "images/img/rootfs/etc/ok").read_text() == "ok\n"
    assert images.list_images(state) == ["img"]


def test_bad_names_refused(tmp_path):
    for name in ("", "../x", "a/b", ".hidden", "sp ace"):
        with pytest.raises(images.ImageError, match="bad image name"):
            images.import_image(tmp_path, name, tmp_path / "state", log=quiet)


def test_read_excludes(tmp_path):
    (tmp_path / "etc/warewulf").mkdir(parents=True)
    (tmp_path / "etc/warewulf/excludes").write_text("# comment\n/boot/\n\n  usr/share/GeoIP \n")
    assert images.read_excludes(tmp_path) == ["/boot/", "usr/share/GeoIP"]
    assert images.read_excludes(tmp_path / "nothing") == []


def test_cli_import_list_kernels(tmp_path, project_root):
    src = tmp_path / "src"
    (src / "boot").mkdir(parents=True)
    (src / "boot/vmlinuz-6.1.0-13-amd64").write_bytes(b"kernel")
    (src / "etc").mkdir()
    env = dict(os.environ, PYTHONPATH=str(project_root))

    def wwfast(*args):
        return subprocess.run([sys.executable, "-m", "wwfast.cli", "--state", str(tmp_path / "state"), *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path)

    run = wwfast("image", "import", str(src), "demo")
    assert run.returncode == 0, run.stderr
    listing = wwfast("image", "list")
    assert listing.returncode == 0 and "demo" in listing.stdout and "6.1.0-13" in listing.stdout
    kern = wwfast("image", "kernels")
    assert "/boot/vmlinuz-6.1.0-13-amd64" in kern.stdout and "default" in kern.stdout
    again = wwfast("image", "import", str(src), "demo")
    assert again.returncode == 1 and "--update" in again.stderr
    missing = wwfast("image", "import", str(tmp_path / "missing"), "other")
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
