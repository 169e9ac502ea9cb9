"""Shared fixtures: the real Debian kernel for QEMU boots, the project root."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_root():
    return ROOT


@pytest.fixture(scope="session")
def kernel_path():
    """Path of the Debian vmlinuz (fetched once by scripts/fetch-kernel.sh, as .ci/run does)."""
    out = subprocess.run([str(ROOT / "scripts" / "fetch-kernel.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"cannot get the Debian kernel: {out.stderr.strip()}")
    path = pathlib.Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def kernel_modules(kernel_path):
    """The kernel's lib/modules/<version> directory, unpacked beside it by fetch-kernel.sh."""
    version = kernel_path.name[len("vmlinuz-"):]
    mods = kernel_path.parent.parent / "lib" / "modules" / version
    assert mods.is_dir(), mods
    return mods


@pytest.fixture(scope="session")
def debian_image():
    """A Debian 12 systemd image tarball (mmdebstrap from the configured apt sources), built once and
    cached under ~/.cache/wwfast/debian, keyed by its package list, options and apt sources."""
    from wwfast.builder import debian_image as builder
    try:
        path, _ = builder.build(log=lambda m: print(m, flush=True))
    except builder.BuildError as e:
        pytest.fail(f"cannot build the Debian image: {e}")
    return path
