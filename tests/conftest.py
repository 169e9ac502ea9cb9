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
