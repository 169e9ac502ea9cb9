"""`pip install .` into a fresh venv gives a working `wwfast` with its compiled modules, data files and the
pipeline: define, build, compress and serve as `wwfast` verbs on the demo conf, outside the checkout."""
import json
import os
import pathlib
import re
import shutil
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
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "--disable-pip-version-check",
                          str(ROOT)], capture_output=True, text=True)
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

    # The installed pipeline, on the demo conf, outside the checkout: the four stages as `wwfast` verbs.
    wwfast = str(venv / "bin" / "wwfast")
    conf, state, tree = tmp_path / "conf", tmp_path / "var", tmp_path / "tree"
    shutil.copytree(ROOT / "conf", conf)
    (tree / "boot").mkdir(parents=True)
    kernel = b"installed-pipeline kernel " + os.urandom(16).hex().encode()
    (tree / "boot" / "vmlinuz-6.1.0-1-amd64").write_bytes(kernel)
    (tree / "sbin").mkdir()
    (tree / "sbin" / "init").write_bytes(b"#!/bin/sh\n")
    dirs = ["--conf", str(conf), "--state", str(state)]

    def run(*args):
        out = subprocess.run([wwfast, *dirs, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=300)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    run("image", "import", str(tree), "demo")
    assert "define: wrote 3 nodes" in run("define")
    built = run("build")
    assert "build: wrote" in built and "image demo: rebuilding" in built
    stamp = json.loads((state / "stages" / "build.stamp").read_text())
    assert any(p.startswith(str(venv)) and p.endswith("/wwfast/stages/build.py") for p in stamp["code"])
    run("compress")
    assert (state / "publish" / "manifest.json").is_file()
    assert run("all") == "define: current (inputs unchanged)\nbuild: current (inputs unchanged)\n"

    serve = subprocess.Popen([wwfast, *dirs, "serve", "--bind", "127.0.0.1", "--http-port", "0", "--no-tftp"],
                             cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        port, seen = None, []
        for line in serve.stderr:          # serve logs its address once it listens (ends at EOF if it dies)
            seen.append(line)
            match = re.search(r"HTTP on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "".join(seen)
        got = subprocess.run(["curl", "-sS", "--max-time", "60", "-o", str(tmp_path / "kernel"), "-w", "%{http_code}",
                              f"http://127.0.0.1:{port}/kernel/52:54:00:00:00:01"], capture_output=True, text=True)
        assert got.stdout == "200", got.stderr
        assert (tmp_path / "kernel").read_bytes() == kernel
    finally:
        serve.terminate()
        serve.wait(60)
    assert serve.returncode == 0
