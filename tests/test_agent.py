"""The node agent (wwinit overlay's /wwinit/wwfast-agent) under busybox sh, against a real HTTP server.

Only busybox applets are on PATH (as on a busybox node), except in the curl variant. The server checks
the client's source port like the secure mode of the serve stage: below 1024 or 403.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import pytest

from helpers.agent_server import BUSYBOX, MAC, RuntimeServer
from helpers.agent_server import run_agent as _run_agent
from helpers.overlay_fixtures import fake_ssh_keys, fixture_nodes, fixture_settings, make_images
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.builder.overlays import BUILTIN_DIR

AGENT = BUILTIN_DIR / "wwinit" / "wwinit" / "wwfast-agent"
TESTS = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def runtime_archive(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent-build")
    conf, state = tmp / "conf", tmp / "state"
    conf.mkdir()
    make_images(state)
    fake_ssh_keys(state)
    build_overlays(conf, state, fixture_settings(), fixture_nodes())
    return pathlib.Path(archive_path(state, "n-static", "runtime")).read_bytes()


@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory):
    """A PATH with busybox applets only (no curl, GNU wget or GNU cpio)."""
    bindir = tmp_path_factory.mktemp("busybox-bin")
    for applet in subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split():
        os.symlink(BUSYBOX, bindir / applet)
    return str(bindir)


def run_agent(tmp_path, port, secure, path_env, *args):
    return _run_agent(tmp_path, port, secure, path_env, *args)


def test_agent_applies_runtime_overlay_and_skips_unchanged(tmp_path, runtime_archive, busybox_path):
    with RuntimeServer(runtime_archive) as server:
        (tmp_path / "root" / "etc").mkdir(parents=True)
        (tmp_path / "root" / "etc" / "hosts").write_text("old hosts\n")
        (tmp_path / "root" / "etc" / "keep-me").write_text("not in the overlay: never deleted\n")
        proc, root = run_agent(tmp_path, server.port, False, busybox_path, "--once")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "updated /etc/hosts" in proc.stdout
        assert "10.0.2.15 n-static" in (root / "etc" / "hosts").read_text()
        assert (root / "etc" / "keep-me").exists()
        keys = root / "root" / ".ssh" / "authorized_keys"
        assert keys.read_text() == "ssh-ed25519 FIXTUREADMIN wwfast admin\n"
        assert oct(keys.stat().st_mode & 0o777) == "0o600"
        assert oct((root / "root" / ".ssh").stat().st_mode & 0o777) == "0o700"
        assert "alice:x:1001:1001" not in (root / "etc" / "passwd").read_text()  # image's alice wins
        inode = (root / "etc" / "hosts").stat().st_ino
        again, _ = run_agent(tmp_path, server.port, False, busybox_path, "--once")
        assert again.returncode == 0 and "updated" not in again.stdout, again.stdout
        assert (root / "etc" / "hosts").stat().st_ino == inode  # unchanged files are not rewritten
        assert not list(root.glob("etc/.*wwfast-new")), "temp files left behind"
        path, _ = server.requests[0]
        assert path.startswith(f"/runtime/{MAC}?compress=gz&assetkey=")


@pytest.mark.parametrize("client", ["busybox", "curl"])
def test_agent_secure_mode_uses_a_privileged_source_port(tmp_path, runtime_archive, busybox_path, client):
    """In a private network namespace (the busybox path narrows that namespace's ephemeral port range)."""
    path_env = busybox_path
    if client == "curl":
        curl_dir = tmp_path / "curl-bin"
        curl_dir.mkdir()
        os.symlink(shutil.which("curl"), curl_dir / "curl")
        path_env = f"{curl_dir}:{busybox_path}"
    archive = tmp_path / "runtime.cpio"
    archive.write_bytes(runtime_archive)

    def in_netns(secure):
        work = tmp_path / f"work-{secure}"
        work.mkdir()
        env = dict(os.environ, PYTHONPATH=f"{TESTS}:{os.environ.get('PYTHONPATH', '')}")
        out = subprocess.run(["unshare", "--net", sys.executable, "-m", "helpers.agent_server", str(archive),
                              str(work), path_env, "1" if secure else "0"],
                             capture_output=True, text=True, env=env, timeout=120, cwd=TESTS)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout), work / "root"

    result, root = in_netns(secure=True)
    assert result["rc"] == 0, result
    assert "10.0.2.15 n-static" in (root / "etc" / "hosts").read_text()
    assert result["ports"] and all(port < 1024 for port in result["ports"]), result
    assert result["range_restored"]
    # the plain agent gets refused by this server: the port rule is what was tested
    plain, _ = in_netns(secure=False)
    assert plain["rc"] == 1 and "failed" in plain["out"] and all(p >= 1024 for p in plain["ports"]), plain


def test_agent_logs_failures_and_keeps_trying(tmp_path, busybox_path):
    with RuntimeServer(b"not a cpio archive") as server:
        proc, _ = run_agent(tmp_path, server.port, False, busybox_path, "--once")
        assert proc.returncode == 1 and "cannot unpack the runtime overlay" in proc.stdout
        config = tmp_path / "config"
        env = {"PATH": busybox_path, "WWFAST_ROOT": str(tmp_path / "root"), "WWFAST_CONFIG": str(config)}
        loop = subprocess.Popen([BUSYBOX, "sh", str(AGENT)], env=env, stdout=subprocess.PIPE, text=True)
        # The agent's log is the record: read it until the second failure is logged (it retried after the
        # first). A fixed 5 s window could miss the retry on a loaded machine; 120 s is only a backstop.
        backstop = threading.Timer(120, loop.kill)
        backstop.start()
        lines = []
        try:
            for line in loop.stdout:
                lines.append(line)
                if sum("cannot unpack" in seen for seen in lines) >= 2:
                    break
        finally:
            backstop.cancel()
            loop.terminate()
            out = "".join(lines) + loop.communicate(timeout=30)[0]
        assert out.count("cannot unpack") >= 2, out
