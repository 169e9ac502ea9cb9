"""HTTPS: `wwfast configure tls`, the certificate the wwinit overlay carries, and the node agent that
trusts only that certificate (real curl, busybox sh)."""
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from helpers.agent_server import BUSYBOX, RuntimeServer, run_agent
from wwfast import cpio
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.configure import tls
from wwfast.define.settings import Settings
from wwfast.define.settings import load as load_settings

WWFAST = str(pathlib.Path(sys.executable).with_name("wwfast"))


def ww(conf, *args, ok=True):
    out = subprocess.run([WWFAST, "--conf", str(conf), *args], capture_output=True, text=True, timeout=60)
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two self-signed pairs with the same names: the server's and a forger's."""
    base = tmp_path_factory.mktemp("pki")
    good, forged = base / "good", base / "forged"
    for conf in (good, forged):
        conf.mkdir()
        tls.generate(str(conf), ["127.0.0.1", "localhost", "10.0.2.2"])   # 10.0.2.2: the host as QEMU guests see it
    return good, forged


def context(conf):
    return tls.server_context(str(conf))


def test_configure_tls_generates_imports_and_refuses(tmp_path, pki):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "wwfast.yaml").write_text("ipaddr: 10.9.8.7\nwarewulf:\n  tls: true\n  tls port: 9999\n")
    out = ww(conf, "configure", "tls")
    assert "names: 10.9.8.7" in out.stdout and "sha256:" in out.stdout
    assert oct((conf / "tls" / "wwfast.key").stat().st_mode & 0o777) == "0o600"
    assert "already exists" in ww(conf, "configure", "tls", ok=False).stderr
    good, forged = pki
    out = ww(conf, "configure", "tls", "--import", str(good / "tls" / "wwfast.crt"),
             str(forged / "tls" / "wwfast.key"), "--force", ok=False)
    assert "is not the key of the certificate" in out.stderr
    ww(conf, "configure", "tls", "--import", str(good / "tls" / "wwfast.crt"), str(good / "tls" / "wwfast.key"),
       "--force")
    assert (conf / "tls" / "wwfast.crt").read_bytes() == (good / "tls" / "wwfast.crt").read_bytes()
    settings = load_settings(str(conf))
    assert (settings.tls, settings.tls_port) == (True, 9999)


def test_server_context_is_modern_only(pki, tmp_path):
    """curl can talk TLS 1.2 and 1.3 with it, not TLS 1.1 or a non-forward-secret suite."""
    good, _ = pki
    with RuntimeServer(b"x", ssl_context=context(good)) as server:
        url = f"https://127.0.0.1:{server.port}/runtime/x"
        cacert = str(good / "tls" / "wwfast.crt")
        for extra, ok in ((["--tlsv1.3"], True), (["--tlsv1.2", "--tls-max", "1.2"], True),
                          (["--tlsv1.1", "--tls-max", "1.1"], False),
                          (["--tls-max", "1.2", "--ciphers", "AES128-SHA256"], False)):
            out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", cacert,
                                  *extra, url], capture_output=True, text=True, timeout=60)
            assert (out.returncode == 0) == ok, (extra, out.stdout, out.stderr)


@pytest.fixture
def curl_path(tmp_path):
    """busybox applets and curl (the agent needs curl to check a certificate)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split():
        os.symlink(BUSYBOX, bindir / applet)
    os.symlink(shutil.which("curl"), bindir / "curl")
    return str(bindir)


def runtime_payload(tmp_path):
    buf = io.BytesIO()
    w = cpio.NewcWriter(buf)
    w.add_dir("etc")
    w.add_file("etc/tls-marker", b"runtime overlay over https\n")
    w.close()
    return buf.getvalue()


def test_agent_fetches_over_https_and_refuses_a_forged_certificate(tmp_path, pki, curl_path):
    good, forged = pki
    payload = runtime_payload(tmp_path)
    with RuntimeServer(payload, ssl_context=context(good)) as server:
        proc, root = run_agent(tmp_path / "a", server.port, False, curl_path, "--once",
                               tls_cert=good / "tls" / "wwfast.crt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "etc" / "tls-marker").read_text() == "runtime overlay over https\n"
    assert server.requests

    with RuntimeServer(payload, ssl_context=context(forged)) as server:   # someone else's server
        proc, root = run_agent(tmp_path / "b", server.port, False, curl_path, "--once",
                               tls_cert=good / "tls" / "wwfast.crt")
    assert proc.returncode == 1
    assert "certificate" in proc.stdout and not (root / "etc" / "tls-marker").exists()
    assert not server.requests          # the handshake failed: no request was ever sent

    busybox_only = tmp_path / "bb"
    shutil.copytree(curl_path, busybox_only, symlinks=True)
    (busybox_only / "curl").unlink()
    with RuntimeServer(payload, ssl_context=context(good)) as server:
        proc, root = run_agent(tmp_path / "c", server.port, False, str(busybox_only), "--once",
                               tls_cert=good / "tls" / "wwfast.crt")
    assert proc.returncode == 1 and "no curl to check the server certificate" in proc.stdout
    assert not server.requests


def test_wwinit_overlay_carries_the_certificate_only_with_tls(tmp_path, pki):
    from helpers.overlay_fixtures import make_node, netdev
    good, _ = pki
    conf = tmp_path / "conf"
    shutil.copytree(good, conf)
    node = make_node("n1", **{"system overlay": ["wwinit"], "runtime overlay": [],
                              "network devices": {"default": netdev(hwaddr="52:54:00:00:00:01")}})
    for on in (False, True):
        settings = Settings(address="127.0.0.1", tls=on, tls_port=9999, digest=f"tls-{on}")
        built = build_overlays(conf, tmp_path / "state", settings, {"n1": node}, force=True)
        # the node's system overlay: in secure mode its shared part (the certificate is the same for every
        # node), then its own; GNU cpio reads each archive on its own
        parts = [archive_path(tmp_path / "state", "n1", "system")]
        if "n1" in built.shared:
            parts.insert(0, tmp_path / "state" / "build" / built.shared["n1"])
        text = "".join(subprocess.run(["cpio", "-i", "--to-stdout", "wwinit/tls/wwfast.crt", "wwinit/config"],
                                      stdin=open(part, "rb"), capture_output=True, timeout=60).stdout.decode()
                       for part in parts)
        assert ("WWTLS=1" in text and "WWTLSPORT=9999" in text) == on
        assert (good / "tls" / "wwfast.crt").read_text() in text if on else "BEGIN CERTIFICATE" not in text


def test_serve_https_runtime_only_over_tls_rest_over_http(tmp_path, pki):
    """serve with `tls: true`: curl gets every stage over HTTPS (checking the certificate), the runtime
    overlay over plain HTTP is 403, the other stages still come over HTTP (iPXE without HTTPS)."""
    from serve_helpers import free_port, make_node, publish, running_server, store_bytes, wait_port
    good, forged = pki
    state = tmp_path / "state"
    shutil.copytree(good / "tls", state / "conf" / "tls")
    mac = "52:54:00:00:00:01"
    image = os.urandom(6 << 20)            # several TLS writes with the transport's flow control
    manifest = publish(str(state), {"n001": make_node(str(state), "n001", mac, image)}, "gen-tls")
    entry = manifest["nodes"]["n001"]["artifacts"]
    http_port, tls_port = free_port(), free_port()
    cacert = str(good / "tls" / "wwfast.crt")

    def curl(url, *extra):
        return subprocess.run(["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *extra, url],
                              capture_output=True, timeout=90)

    settings = "warewulf:\n  secure: false\n  tls: true\n"
    with running_server(str(state), http_port, "--tls-port", str(tls_port), settings=settings) as proc:
        wait_port(tls_port, proc)          # HTTPS listens right after HTTP
        got = curl(f"https://127.0.0.1:{tls_port}/runtime/{mac}", "--cacert", cacert)
        body, code = got.stdout.rsplit(b"\n", 1)
        assert code == b"200" and body == store_bytes(str(state), entry["runtime"]["zst"])
        got = curl(f"https://127.0.0.1:{tls_port}/image/{mac}", "--cacert", cacert)
        assert got.stdout.rsplit(b"\n", 1)[0] == store_bytes(str(state), entry["image"]["zst"])
        got = curl(f"http://127.0.0.1:{http_port}/runtime/{mac}")
        body, code = got.stdout.rsplit(b"\n", 1)
        assert code == b"403" and b"HTTPS only" in body
        got = curl(f"http://127.0.0.1:{http_port}/kernel/{mac}")
        assert got.stdout.rsplit(b"\n", 1)[1] == b"200"
        got = curl(f"https://127.0.0.1:{tls_port}/runtime/{mac}", "--cacert", str(forged / "tls" / "wwfast.crt"))
        assert got.returncode != 0 and b"certificate" in got.stderr
        # the node's boot record says which came over HTTPS, whole, and which was refused on plain HTTP
        got = curl(f"http://127.0.0.1:{http_port}/status?node=n001")
        record = json.loads(got.stdout.rsplit(b"\n", 1)[0])
        requests = record["last boot"]["requests"] + record["boot"]["requests"]    # the kernel began a boot
        assert [(r["stage"], r["protocol"], r["code"], r["result"], r["reason"]) for r in requests] == [
            ("runtime", "https", 200, "ok", ""), ("image", "https", 200, "ok", ""),
            ("runtime", "http", 403, "refused", "NOT_TLS"), ("kernel", "http", 200, "ok", "")], requests
        assert requests[1]["bytes"] == entry["image"]["zst"]["size"]

    no_key = tmp_path / "nokey"            # TLS on, no `wwfast configure tls` yet: a message, no listener
    no_key.mkdir()
    (no_key / "wwfast.yaml").write_text(settings)
    out = subprocess.run([sys.executable, "-m", "stages.serve", "--conf", str(no_key), "--state", str(state),
                          "--http-port", str(http_port), "--no-tftp"], capture_output=True, text=True,
                         timeout=60, cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert out.returncode == 2 and "wwfast configure tls" in out.stderr
