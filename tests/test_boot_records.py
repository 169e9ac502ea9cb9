"""Boot records (issue 11): serve keeps every request of each node's current and last boot, for HTTP
and TFTP alike, and `wwfast status NODE` and /status?node=ID show it. Real serve process, curl and
tftp-hpa's client; the tests assert on the record, never on a sampled state."""
import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from serve_helpers import ROOT, free_port, make_node, publish, running_server, store_bytes

MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
LONG_SCRIPT_TAG = b"# padding\n" * 300       # a 3 KB script: several TFTP blocks


def curl(url, *args):
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", *args, url],
                         capture_output=True, text=True, timeout=30)
    return out.stdout


def record(base, node_id):
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", f"{base}/status?node={node_id}"],
                         capture_output=True, text=True, check=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def record_when(base, node_id, done, timeout=30.0):
    """The node's record once `done(record)` holds. Waits for a fact serve records once and keeps (a
    transfer's end, reported after the client's last ACK), never for a passing state; the timeout is
    a backstop for a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = record(base, node_id)
        doc = json.loads(body)
        if done(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def ended(doc):
    return all(r["result"] is not None for r in (doc["boot"] or {}).get("requests", []))


def wwfast(*args):
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "wwfast"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def cluster(tmp_path):
    state = str(tmp_path / "var")
    root = tmp_path / "tftproot"
    root.mkdir()
    nodes = {"n001": make_node(state, "n001", MAC1, os.urandom(24 << 20), tag=LONG_SCRIPT_TAG),
             "n002": make_node(state, "n002", MAC2, b"IMAGE", asset_key="k2")}
    manifest = publish(state, nodes, "gen-1")
    return {"state": state, "root": root, "manifest": manifest, "tmp": tmp_path}


@pytest.mark.twin
def test_every_request_of_a_boot_is_recorded_http_and_tftp(cluster):
    state, manifest, tmp = cluster["state"], cluster["manifest"], cluster["tmp"]
    arts = manifest["nodes"]["n001"]["artifacts"]
    port, tftp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port, tftp_port=tftp_port, tftp_root=cluster["root"]):
        t0 = time.time()
        subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(tftp_port), "-c", "get", "52-54-00-00-00-01.ipxe",
                        str(tmp / "script")], check=True, timeout=20)
        assert (tmp / "script").read_bytes() == store_bytes(state, arts["ipxe"]["raw"])
        assert curl(f"{base}/kernel/{MAC1}") == "200"
        assert curl(f"{base}/image/{MAC1}?compress=gz") == "200"
        assert curl(f"{base}/image/{MAC1}", "-I") == "200"                                  # HEAD: no body
        assert curl(f"{base}/system/{MAC1}", "-H", f'If-None-Match: "{arts["system"]["zst"]["sha256"]}"') == "304"
        assert curl(f"{base}/system/{MAC1}") == "200"
        assert curl(f"{base}/runtime/{MAC1}", "-r", "0-9") == "206"
        assert curl(f"{base}/runtime/{MAC1}") == "200"
        assert curl(f"{base}/kernel/{MAC2}?assetkey=wrong") == "401"
        doc = record_when(base, "n001", ended)
        t1 = time.time()
        code, body = record(base, "nosuch")
        assert code == 404 and "nosuch" in body

    boot = doc["boot"]
    requests = boot["requests"]
    rows = [(r["stage"], r["protocol"], r["method"], r["code"], r["encoding"], r["result"]) for r in requests]
    assert rows == [("ipxe", "tftp", "GET", 200, "raw", "ok"), ("kernel", "http", "GET", 200, "raw", "ok"),
                    ("image", "http", "GET", 200, "gz", "ok"), ("image", "http", "HEAD", 200, "zst", "ok"),
                    ("system", "http", "GET", 304, "zst", "ok"), ("system", "http", "GET", 200, "zst", "ok"),
                    ("runtime", "http", "GET", 206, "zst", "ok"), ("runtime", "http", "GET", 200, "zst", "ok")]
    want = [arts["ipxe"]["raw"], arts["kernel"]["raw"], arts["image"]["gz"], None, None, arts["system"]["zst"],
            None, arts["runtime"]["zst"]]
    for r, entry in zip(requests, want):
        if entry is not None:     # the bytes actually sent: whole files (TFTP: every block acknowledged)
            assert (r["file"], r["bytes"], r["length"]) == (entry["file"], entry["size"], entry["size"]), r
    assert [r["bytes"] for r in requests if r["code"] in (304,) or r["method"] == "HEAD"] == [0, 0]
    assert requests[6]["bytes"] == 10                                                      # the 0-9 range
    assert all(r["client"] == "127.0.0.1" and r["generation"] == "gen-1" for r in requests)
    assert all(t0 <= r["start"] <= r["end"] <= t1 for r in requests)
    assert [r["start"] for r in requests] == sorted(r["start"] for r in requests)
    # the boot: from the TFTP script to the first whole runtime overlay (not the range, not a HEAD)
    assert boot["start"] == requests[0]["start"] and boot["end"] == requests[-1]["end"]
    assert boot["generation"] == "gen-1" and boot["dropped"] == 0 and doc["last boot"] is None
    assert (doc["boot start"], doc["boot end"]) == (boot["start"], boot["end"])
    refused = json.load(open(os.path.join(state, "serve", "status.json")))["nodes"]["n002"]["boot"]["requests"]
    assert [(r["stage"], r["result"], r["reason"], r["code"]) for r in refused] == [("kernel", "refused",
                                                                                      "BAD_ASSET", 401)]


@pytest.mark.twin
def test_cut_short_transfers_are_recorded_as_such(cluster):
    """A download the client drops (curl giving up) and a TFTP transfer the client aborts: each is in
    the record with the bytes that went out and why it ended."""
    state, manifest = cluster["state"], cluster["manifest"]
    image = manifest["nodes"]["n001"]["artifacts"]["image"]["zst"]
    port, tftp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port, tftp_port=tftp_port, tftp_root=cluster["root"]):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            s.sendto(b"\0\1" + b"52-54-00-00-00-01.ipxe\0octet\0", ("127.0.0.1", tftp_port))
            data, peer = s.recvfrom(1024)
            assert data[:4] == b"\0\3\0\1"     # the first block; the client aborts instead of ACKing it
            s.sendto(b"\0\5" + struct.pack("!H", 0) + b"changed my mind\0", peer)
        # A client that gives up mid-body: it reads the head and 64 KiB of the body, then closes. (Was curl
        # --max-time 1: on a loaded machine curl could give up before serve had even answered.)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:     # 60: a backstop
            c.sendall(f"GET /image/{MAC1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = b""
            while len(got.partition(b"\r\n\r\n")[2]) < 65536:
                chunk = c.recv(65536)
                assert chunk, got[:200]
                got += chunk
            assert got.startswith(b"HTTP/1.1 200"), got[:200]
        doc = record_when(base, "n001", lambda d: ended(d) and len(d["boot"]["requests"]) == 2)
    script_req, image_req = doc["boot"]["requests"]
    assert (image_req["stage"], image_req["result"], image_req["reason"]) == ("image", "cut short",
                                                                              "connection closed"), image_req
    assert 0 < image_req["bytes"] < image["size"] == image_req["length"], image_req
    assert (script_req["protocol"], script_req["result"], script_req["reason"], script_req["bytes"]) == \
        ("tftp", "cut short", "aborted", 0), script_req
    assert doc["boot end"] == 0               # neither counts as a finished boot


def test_wwfast_status_node_shows_the_record_live_and_from_the_saved_copy(cluster):
    state = cluster["state"]
    port = free_port()
    conf = os.path.join(state, "conf")
    settings = f"warewulf:\n  port: {port}\n  bind: 127.0.0.1\n  secure: false\n"
    with running_server(state, port, settings=settings):
        base = f"http://127.0.0.1:{port}"
        for boot in range(2):
            for stage in ("ipxe", "kernel", "image", "system", "runtime"):
                assert curl(f"{base}/{stage}/{MAC1}") == "200"
        live = wwfast("--conf", conf, "--state", state, "status", "n001")
        assert live.returncode == 0, live.stderr
        unknown = wwfast("--conf", conf, "--state", state, "status", "n001", "nosuch")
        assert unknown.returncode == 1 and "nosuch: no such node" in unknown.stdout
    saved = wwfast("--conf", conf, "--state", state, "status", "n001")
    assert saved.returncode == 0, saved.stderr
    assert "no server answered" in saved.stdout
    for out in (live.stdout, saved.stdout):
        text = out.split("\nn001: last ", 1)[1]
        current, last = text.split("  last boot: ")
        for part in (current, last):
            assert "booted in" in part and "generation gen-1; 5 requests" in part, out
            stages = [line.split()[1] for line in part.splitlines() if line.strip()[:1].isdigit()]
            assert stages == ["ipxe", "kernel", "image", "system", "runtime"], out
    # the table lines are the same whether the server or its saved copy answered
    assert live.stdout.split("\nn001: last ", 1)[1] == saved.stdout.split("\nn001: last ", 1)[1]
