"""Kernel discovery as Warewulf: glob order, version parsing, default choice, per-node selection."""
import os

import pytest

from wwfast.builder import kernels


def make_image(root, paths, links=()):
    for path in paths:
        full = root / path.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(path.encode())
    for link, target in links:
        full = root / link.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, full)
    return root


@pytest.mark.parametrize("path,version", [
    ("/boot/vmlinuz-6.1.0-13-amd64", "6.1.0-13"),
    ("/boot/vmlinuz-5.14.0-427.13.1.el9_4.x86_64", "5.14.0-427.13.1"),
    ("/boot/vmlinuz-4.18.0-372.9.1.el8.x86_64+debug", "4.18.0-372.9.1"),
    ("/lib/modules/6.8.0/vmlinuz", "6.8.0"),
    ("/boot/Image-6.4.0-150600.23.7-default", "6.4.0-150600.23.7"),
    ("/boot/vmlinuz-linux", ""),
])
def test_version_parsing(path, version):
    v = kernels.parse_version(path)
    assert (str(v) if v else "") == version


def test_version_order_like_go_version():
    v = kernels.parse_version
    assert v("6.1.0-21") > v("6.1.0-13")          # numeric pre-release parts
    assert v("6.1.0") > v("6.1.0-21")             # a pre-release sorts below its release
    assert v("6.10.0") > v("6.9.0")               # numeric, not lexical
    assert v("5.14.0-427.13.1") > v("5.14.0-427.2")


def test_glob_order_and_default(tmp_path):
    root = make_image(tmp_path, [
        "/boot/vmlinuz-6.1.0-13-amd64",
        "/boot/vmlinuz-6.1.0-21-amd64",
        "/boot/vmlinuz-6.10.0-1+debug",           # highest, but debug
        "/boot/vmlinuz-6.12.0-rescue-0123abcd",   # rescue
        "/boot/Image-6.0.0-1-default",
        "/lib/modules/5.14.0-427.el9.x86_64/vmlinuz",
        "/lib/modules/6.2.0-1/vmlinuz.gz",
        "/boot/config-6.1.0-21-amd64",            # not a kernel
    ])
    found = [k.path for k in kernels.find_kernels(root)]
    assert found == [
        "/boot/Image-6.0.0-1-default",
        "/boot/vmlinuz-6.1.0-13-amd64", "/boot/vmlinuz-6.1.0-21-amd64",
        "/boot/vmlinuz-6.10.0-1+debug", "/boot/vmlinuz-6.12.0-rescue-0123abcd",
        "/lib/modules/5.14.0-427.el9.x86_64/vmlinuz",
        "/lib/modules/6.2.0-1/vmlinuz.gz",
    ]
    default = kernels.select_kernel(root)
    assert default.path == "/lib/modules/6.2.0-1/vmlinuz.gz" and default.version == "6.2.0-1"


def test_arch_linux_names_and_unversioned(tmp_path):
    root = make_image(tmp_path, ["/boot/vmlinuz-linux", "/boot/vmlinuz-linux-lts"])
    found = kernels.find_kernels(root)
    assert [k.path for k in found] == ["/boot/vmlinuz-linux", "/boot/vmlinuz-linux-lts"]  # once each
    assert kernels.select_kernel(root).path == "/boot/vmlinuz-linux"   # no versions: the first found


def test_node_kernel_version_prefix_and_path(tmp_path):
    root = make_image(tmp_path, [
        "/boot/Image-6.1.0-99-default",
        "/boot/vmlinuz-6.1.0-13-amd64",
        "/boot/vmlinuz-6.1.0-21-amd64",
        "/boot/vmlinuz-5.10.0-28-amd64",
        "/boot/vmlinuz-5.10.0-30-amd64+debug",
    ])
    # A prefix picks the first match in glob order (Warewulf's Version()), debug kernels skipped.
    assert kernels.select_kernel(root, "6.1").path == "/boot/Image-6.1.0-99-default"
    assert kernels.select_kernel(root, "6.1.0-2").path == "/boot/vmlinuz-6.1.0-21-amd64"
    assert kernels.select_kernel(root, "5.10").path == "/boot/vmlinuz-5.10.0-28-amd64"
    with pytest.raises(kernels.KernelError):
        kernels.select_kernel(root, "5.10.0-3")    # only the debug kernel matches
    # An absolute path inside the image wins when that file exists (even a debug kernel).
    assert kernels.select_kernel(root, "/boot/vmlinuz-5.10.0-30-amd64+debug").path == \
        "/boot/vmlinuz-5.10.0-30-amd64+debug"
    with pytest.raises(kernels.KernelError, match="'7.0'.*found: /boot/Image-6.1.0-99-default"):
        kernels.select_kernel(root, "7.0")


def test_no_kernel_is_a_clear_error(tmp_path):
    (tmp_path / "etc").mkdir()
    with pytest.raises(kernels.KernelError, match="no kernel found in the image"):
        kernels.select_kernel(tmp_path)


def test_symlinks_resolve_inside_the_image(tmp_path):
    root = make_image(tmp_path / "img", ["/usr/lib/kernels/6.5.0/vmlinuz"],
                      links=[("/boot/vmlinuz-6.5.0-1", "/usr/lib/kernels/6.5.0/vmlinuz")])
    k = kernels.select_kernel(root)
    assert k.full_path == str(root / "usr/lib/kernels/6.5.0/vmlinuz")
    # An absolute link never reaches the host's file of the same name.
    os.symlink("/etc/hostname", root / "boot/vmlinuz-9.9.9")
    assert kernels.resolve_in_root(str(root), "/boot/vmlinuz-9.9.9") == str(root / "etc/hostname")
