"""Which encoding a node's archives go out in, read with real tools (curl, zstd, gzip, GNU cpio).

Two images: one with a current kernel (6.1: reads zstd initrds), one whose kernel is 4.19 (before
5.9, zstd initrds unknown to it; the version comes from the kernel's file name, as the build finds
it). Settings leave `compression: gzip` off. The old-kernel node's iPXE script asks for gzip by
itself and the compress stage makes gzip for its archives only; the request without ?compress
stays zstd; ?compress=none sends the archive uncompressed (decompressed once into the store).
"""
import os
import shutil
import socket
import subprocess

import pytest

from helpers.busybox_tree import make_busybox_tree
from helpers.cluster import Cluster
from helpers.newc import split_archives

pytestmark = [pytest.mark.twin]

NEW = ("cnew", "52:54:00:c0:00:01")
OLD = ("cold", "52:54:00:c0:00:02")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def image_tree(root, kernel_path, version):
    make_busybox_tree(root)
    os.makedirs(root / "boot")
    shutil.copyfile(kernel_path, root / "boot" / f"vmlinuz-{version}")
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, kernel_path):
    base = tmp_path_factory.mktemp("compress-choice")
    conf, state = base / "conf", base / "state"
    port = free_port()
    write(conf / "wwfast.yaml", f"""ipaddr: 10.0.2.2
netmask: 255.255.255.0
warewulf:
  port: {port}
  bind: 127.0.0.1
tftp:
  enabled: false
compression:
  gzip: false
""")
    write(conf / "nodes.yaml", f"""nodes:
  {NEW[0]}:
    image name: new
    system overlay: [wwinit, hostname]
    network devices:
      default: {{hwaddr: "{NEW[1]}"}}
  {OLD[0]}:
    image name: old
    system overlay: [wwinit, hostname]
    network devices:
      default: {{hwaddr: "{OLD[1]}"}}
""")
    c = Cluster(conf, state, http_port=port)
    c.import_image(image_tree(base / "new", kernel_path, "6.1.0-57-amd64"), "new")
    c.import_image(image_tree(base / "old", kernel_path, "4.19.0-27-amd64"), "old")
    c.publish()
    c.start_serve()
    try:
        yield c
    finally:
        c.stop_serve()


def curl(cluster, path, out):
    url = f"http://127.0.0.1:{cluster.http_port}{path}"
    res = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", url],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def cpio_names(data):
    """GNU cpio's listing of every archive in `data` (a secure-mode system overlay is two, back to back:
    GNU cpio stops at the first trailer, the kernel goes on)."""
    names = []
    for part in split_archives(data):
        res = subprocess.run(["cpio", "-it", "--quiet"], input=part, capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        names += res.stdout.decode().split()
    return names


def test_old_kernel_node_script_asks_for_gzip_and_the_new_one_does_not(cluster, tmp_path):
    for (name, mac), gz in ((NEW, False), (OLD, True)):
        assert curl(cluster, f"/ipxe/{mac}", tmp_path / name) == 200
        script = (tmp_path / name).read_text()
        initrds = [line for line in script.splitlines() if line.startswith("initrd ")]
        assert initrds and all("${query}" in line for line in initrds), script
        assert ("&compress=gz" in script) == gz, script


def test_gzip_is_published_for_the_old_kernels_archives_only(cluster):
    nodes = cluster.manifest()["nodes"]
    for stage in ("image", "system", "runtime"):
        assert set(nodes[OLD[0]]["artifacts"][stage]) == {"zst", "gz"}
        assert set(nodes[NEW[0]]["artifacts"][stage]) == {"zst"}


def test_encodings_on_the_wire(cluster, tmp_path):
    mac = OLD[1]
    assert curl(cluster, f"/image/{mac}", tmp_path / "default") == 200
    assert (tmp_path / "default").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"          # zstd frame
    assert curl(cluster, f"/image/{mac}?compress=gz", tmp_path / "gz") == 200
    assert (tmp_path / "gz").read_bytes()[:2] == b"\x1f\x8b"
    assert curl(cluster, f"/image/{mac}?compress=none", tmp_path / "none") == 200
    raw = (tmp_path / "none").read_bytes()
    assert raw[:6] == b"070701"                                                    # newc, as it is
    from_zst = subprocess.run(["zstd", "-dc", str(tmp_path / "default")], capture_output=True, check=True).stdout
    from_gz = subprocess.run(["gzip", "-dc", str(tmp_path / "gz")], capture_output=True, check=True).stdout
    assert raw == from_zst == from_gz
    names = cpio_names(raw)
    assert "bin/busybox" in names and "boot/vmlinuz-4.19.0-27-amd64" in names
    # a node without gzip published gets the uncompressed archive too (from its zstd file)
    assert curl(cluster, f"/system/{NEW[1]}?compress=none", tmp_path / "sys") == 200
    assert "etc/hostname" in cpio_names((tmp_path / "sys").read_bytes())
    assert curl(cluster, f"/image/{mac}?compress=lzma", tmp_path / "bad") == 400


def test_uncompressed_archive_is_kept_in_the_store_named_by_its_content(cluster, tmp_path):
    import hashlib
    assert curl(cluster, f"/system/{NEW[1]}?compress=none", tmp_path / "rt") == 200
    data = (tmp_path / "rt").read_bytes()
    stored = cluster.state / "store" / (hashlib.sha256(data).hexdigest() + ".cpio")
    assert stored.read_bytes() == data
    # served again from the store file: same bytes, and the ETag is the content hash
    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", str(tmp_path / "rt2"),
                          f"http://127.0.0.1:{cluster.http_port}/system/{NEW[1]}?compress=none"],
                         capture_output=True, text=True, check=True)
    assert f'"{hashlib.sha256(data).hexdigest()}"' in out.stdout
    assert (tmp_path / "rt2").read_bytes() == data


def test_manifest_names_the_old_kernels_encoding_for_cache_tier_scripts(cluster):
    """With a cache tier the server writes each node's content addresses into its script: the old-kernel
    node's are its gzip files (the manifest's node `encoding`), the new one's its zstd files."""
    from wwfast import layout
    from wwfast.cluster import sources
    from wwfast.server.catalog import Catalog
    manifest = cluster.manifest()
    assert manifest["nodes"][OLD[0]]["encoding"] == "gz" and "encoding" not in manifest["nodes"][NEW[0]]
    catalog = Catalog(manifest, layout.store_dir(cluster.state))
    for (name, _), enc in ((OLD, "gz"), (NEW, "zst")):
        header = sources.header(catalog.nodes[name], ["http://c/blob/sha256"] * 3, ["http://s"] * 3)
        for stage in ("image", "system"):
            assert f"set wwfast-{stage} {manifest['nodes'][name]['artifacts'][stage][enc]['sha256']}\n" in header
