"""`wwfast configure cache`: nginx accepts the file, and a real nginx caches blobs in slices with one
origin fetch per slice however many nodes ask at once; nothing but blobs passes through it."""
import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading

import pytest

from helpers.nginx_cache import NginxCache, free_port, write_config, ROOT

SLICE = 1 << 20


class RangeOrigin:
    """A stand-in wwfast server for blobs: /blob/sha256/<digest> with Range, a strong ETag and the immutable
    Cache-Control; every request it answers is recorded (path, Range header)."""

    def __init__(self, blobs):
        self.blobs = {hashlib.sha256(b).hexdigest(): b for b in blobs}
        self.requests = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                origin.requests.append((self.path, self.headers.get("Range")))
                m = re.fullmatch(r"/blob/sha256/([0-9a-f]{64})", self.path)
                body = origin.blobs.get(m.group(1)) if m else None
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end, status = 0, len(body) - 1, 200
                r = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                if r:
                    start, end, status = int(r.group(1)), min(int(r.group(2) or end), end), 206
                self.send_response(status)
                self.send_header("ETag", f'"{m.group(1)}"')
                self.send_header("Cache-Control", "public, max-age=31536000, immutable")
                self.send_header("Content-Length", str(end - start + 1))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                self.end_headers()
                self.wfile.write(body[start:end + 1])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def blob():
    return os.urandom(5 * SLICE + 12345)           # 6 slices, the last one short


@pytest.fixture
def origin(blob):
    o = RangeOrigin([blob])
    yield o
    o.close()


def test_configure_cache_is_a_complete_nginx_file(tmp_path):
    conf = write_config(tmp_path / "cache.conf", ["127.0.0.1:9873", "[::1]:9873", "localhost:9875"],
                        "127.0.0.1:9874", tmp_path / "c", slice_size="8m")
    assert (tmp_path / "c").is_dir()
    check = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = conf.read_text()
    assert "slice 8m;" in text and "proxy_cache_lock on;" in text
    assert "server 127.0.0.1:9873 max_fails=1 fail_timeout=5s;" in text
    assert "server [::1]:9873 max_fails=1 fail_timeout=5s backup;" in text
    # printed without --output, the default origin is the settings' server
    out = subprocess.run([sys.executable, "-m", "wwfast.cli", "--conf", str(tmp_path), "configure", "cache"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "server 127.0.0.1:9873 max_fails=1" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--origin", "nowhere"], "is not ADDR:PORT"),
    (["--origin", "127.0.0.1:0"], "out of range"),
    (["--origin", "a:1", "--origin", "a:1"], "listed twice"),
    (["--origin", "a:1", "--cache-dir", "relative"], "absolute path"),
    (["--origin", "a:1", "--listen", "x;y:80"], "neither an IP address nor a host name"),
    (["--origin", "a:1", "--slice", "8 m"], "is not a size"),
])
def test_configure_cache_bad_input_is_a_message(capsys, args, message):
    from wwfast.cli import main
    assert main(["configure", "cache", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def _fetch_all(url, clients, tmp_path, tag):
    procs = [subprocess.Popen(["curl", "-sS", "-f", "--max-time", "120", "-o", str(tmp_path / f"{tag}{i}"), url],
                              stderr=subprocess.PIPE) for i in range(clients)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    return [(tmp_path / f"{tag}{i}").read_bytes() for i in range(clients)]


def test_concurrent_nodes_cause_one_origin_fetch_per_slice(tmp_path, origin, blob):
    digest = hashlib.sha256(blob).hexdigest()
    slices = -(-len(blob) // SLICE)
    with NginxCache(tmp_path / "cache", [origin.address]) as cache:
        url = f"{cache.url}/blob/sha256/{digest}"
        for got in _fetch_all(url, 24, tmp_path, "a"):
            assert hashlib.sha256(got).hexdigest() == digest
        fetched = [r for r in origin.requests if r[0].startswith("/blob/")]
        assert sorted(r[1] for r in fetched) == sorted(
            f"bytes={i * SLICE}-{(i + 1) * SLICE - 1}" for i in range(slices)), fetched
        # a second wave is served from the cache alone
        for got in _fetch_all(url, 8, tmp_path, "b"):
            assert hashlib.sha256(got).hexdigest() == digest
        assert len([r for r in origin.requests if r[0].startswith("/blob/")]) == slices
        # a Range request (iPXE never sends one, curl may) is answered from the cached slices
        part = subprocess.run(["curl", "-sS", "-f", "-r", f"{SLICE - 10}-{SLICE + 9}", url], capture_output=True)
        assert part.returncode == 0 and part.stdout == blob[SLICE - 10:SLICE + 10]
        assert len([r for r in origin.requests if r[0].startswith("/blob/")]) == slices
        # nothing but blobs: scripts, runtime overlays, status never reach the origin through a cache
        for path in ("/ipxe/52:54:00:00:00:01", "/runtime/52:54:00:00:00:01", "/status", f"/blob/sha256/{digest}x",
                     "/blob/sha256/../../status"):
            code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", cache.url + path],
                                  capture_output=True, text=True).stdout
            assert code in ("404", "400"), (path, code)
        unknown = "0" * 64
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               f"{cache.url}/blob/sha256/{unknown}"], capture_output=True, text=True).stdout
        assert code == "404"
    assert [r[0] for r in origin.requests if not r[0].startswith(f"/blob/sha256/{digest}")] == \
        [f"/blob/sha256/{unknown}"]
    log = cache.access_log()
    assert sum(1 for row in log if row[0] == f"/blob/sha256/{digest}" and row[1] == 200) == 32


def test_first_origin_dead_the_next_one_fills_the_cache(tmp_path, origin, blob):
    digest = hashlib.sha256(blob).hexdigest()
    dead = f"127.0.0.1:{free_port()}"
    with NginxCache(tmp_path / "cache", [dead, origin.address]) as cache:
        got = _fetch_all(f"{cache.url}/blob/sha256/{digest}", 3, tmp_path, "a")
        assert all(hashlib.sha256(g).hexdigest() == digest for g in got)
    assert len([r for r in origin.requests if r[0].startswith("/blob/")]) == -(-len(blob) // SLICE)
