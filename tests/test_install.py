"""`pip install .` into a fresh venv gives a working `wwfast` with its compiled modules and data files."""
import os
import pathlib
import subprocess
import sys

import pytest

from wwfast._impl import pure_forced

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(pure_forced(), reason="the install is checked once, in the compiled pass")
def test_pip_install_into_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {k: v for k, v in os.environ.items() if k != "WWFAST_PURE"}
    # Run outside the checkout so the installed package, not the source tree, is imported.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import wwfast, wwfast.cpio, wwfast.tftp; print(wwfast.__file__, wwfast.cpio.COMPILED, wwfast.tftp.COMPILED)"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    path, cpio_compiled, tftp_compiled = probe.stdout.split()
    assert str(venv) in path
    assert (cpio_compiled, tftp_compiled) == ("True", "True")
    listing = subprocess.run(
        [str(venv / "bin" / "wwfast"), "--conf", str(tmp_path / "conf"), "--state", str(tmp_path / "var"),
         "overlay", "list"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    for builtin in ("wwinit", "hostname", "hosts", "network"):
        assert builtin in listing.stdout
