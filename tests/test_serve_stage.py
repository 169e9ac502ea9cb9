"""The serve stage as a process: settings and flags, hot reload of a new manifest mid-download,
node status kept across a restart, clean SIGTERM, and TFTP answered from the same loop."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from serve_helpers import ROOT, free_port, make_node, publish, running_server, store_bytes, wait_log, wait_port
from wwfast import fsutil

MAC1 = "52:54:00:00:00:01"


def get(url, *args):
    out = subprocess.run(["curl", "-sS", "--max-time", "20", *args, url], capture_output=True, check=True)
    return out.stdout


def sha(data):
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate, timeout=60.0, what="condition"):
    """Until `predicate` holds: a state that stays once reached (the timeout is a backstop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def held_download(port, path):
    """A GET whose reader stops after the first bytes: the transfer stays in flight (socket buffers
    hold a few MB of a 16 MiB body) until `finish()` reads the rest. Returns finish()."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.connect(("127.0.0.1", port))
    s.settimeout(30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    got = bytearray(s.recv(1 << 16))
    assert got.startswith(b"HTTP/1.1 200"), bytes(got[:100])

    def finish():
        while chunk := s.recv(1 << 20):
            got.extend(chunk)
        s.close()
        return bytes(got).split(b"\r\n\r\n", 1)[1]
    return finish


def test_publish_mid_download_old_bytes_finish_new_requests_get_new_bytes(tmp_path):
    state = str(tmp_path)
    old_image, new_image = os.urandom(16 << 20), os.urandom(1 << 20)
    old = publish(state, {"n001": make_node(state, "n001", MAC1, old_image)}, "gen-1")
    old_entry = old["nodes"]["n001"]["artifacts"]["image"]["zst"]
    old_bytes = store_bytes(state, old_entry)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port) as proc:
        finish = held_download(port, f"/image/{MAC1}")      # in flight until we read on
        new = publish(state, {"n001": make_node(state, "n001", MAC1, new_image, tag=b"v2")}, "gen-2")
        # the compress stage may clean old store files: the download in flight keeps its open file
        os.unlink(os.path.join(state, "store", old_entry["file"]))
        wait_for(lambda: b"gen-2" in get(f"{base}/healthz"), what="manifest reload")
        new_entry = new["nodes"]["n001"]["artifacts"]["image"]["zst"]
        assert sha(get(f"{base}/image/{MAC1}")) == new_entry["sha256"]
        assert get(f"{base}/ipxe/{MAC1}").endswith(b"v2")
        assert sha(finish()) == sha(old_bytes)
        # serve's record: the old download ran across the swap (it ended after the new one began) and
        # sent every byte of the old file
        requests = json.loads(get(f"{base}/status?node=n001"))["last boot"]["requests"]
        images = [r for r in requests if r["stage"] == "image"]
        assert [(r["generation"], r["file"], r["bytes"], r["result"]) for r in images] == [
            ("gen-1", old_entry["file"], old_entry["size"], "ok"),
            ("gen-2", new_entry["file"], new_entry["size"], "ok")], requests
        assert images[0]["end"] > images[1]["start"], images
        # a broken manifest is refused (serve logs it) and the last good one stays in service
        log_at = os.path.getsize(os.path.join(state, "serve.log"))
        fsutil.atomic_write(os.path.join(state, "publish", "manifest.json"), "{not json")
        wait_log(os.path.join(state, "serve.log"), "manifest not loaded", proc, offset=log_at)
        assert b"gen-2" in get(f"{base}/healthz")
        assert sha(get(f"{base}/image/{MAC1}")) == new_entry["sha256"]


def test_status_survives_a_restart_and_sigterm_is_clean(tmp_path):
    state = str(tmp_path)
    publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE" * 1000),
                    "n002": make_node(state, "n002", "52:54:00:00:00:02", b"IMAGE")}, "gen-1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port) as proc:
        for stage in ("ipxe", "kernel", "image", "system", "runtime"):
            get(f"{base}/{stage}/{MAC1}")
        before = json.loads(get(f"{base}/status"))["nodes"]
        record = json.loads(get(f"{base}/status?node=n001"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    saved = json.load(open(os.path.join(state, "serve", "status.json")))["nodes"]
    assert {k: v for k, v in saved["n001"].items() if k not in ("boot", "last boot")} == before["n001"]
    assert saved["n001"]["boot"] == record["boot"]        # the boot record is saved too
    assert [r["stage"] for r in record["boot"]["requests"]] == ["ipxe", "kernel", "image", "system", "runtime"]
    assert saved["n001"]["stage"] == "runtime" and saved["n001"]["boot end"] >= saved["n001"]["boot start"] > 0
    with running_server(state, port):
        after = json.loads(get(f"{base}/status"))["nodes"]
        assert after["n001"] == before["n001"]
        assert after["n002"]["stage"] == "" and after["n002"]["last seen"] == 0
        assert json.loads(get(f"{base}/status?node=n001"))["boot"] == record["boot"]


def test_settings_file_configures_and_flags_override(tmp_path):
    state, conf = str(tmp_path / "var"), str(tmp_path / "conf")
    publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1")
    port, flag_port = free_port(), free_port()
    fsutil.atomic_write(os.path.join(conf, "wwfast.yaml"),
                        f"warewulf:\n  port: {port}\n  bind: 127.0.0.1\n  secure: false\ntftp:\n  enabled: false\n")
    cmd = [sys.executable, "-m", "stages.serve", "--conf", conf, "--state", state]
    for extra, listen in (([], port), (["--http-port", str(flag_port)], flag_port)):
        with open(tmp_path / "log", "wb") as err:
            proc = subprocess.Popen(cmd + extra, cwd=ROOT, stderr=err)
        try:
            wait_port(listen, proc, log_path=str(tmp_path / "log"))
            assert get(f"http://127.0.0.1:{listen}/healthz").startswith(b"ok generation=gen-1")
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
    fsutil.atomic_write(os.path.join(conf, "wwfast.yaml"), "warewulf:\n  port: notaport\n")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "wwfast.yaml" in out.stderr and "port" in out.stderr


def test_no_manifest_yet_is_503_then_served_once_published(tmp_path):
    state = str(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/ipxe/{MAC1}"],
                             capture_output=True, text=True)
        assert out.stdout == "503"
        publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1")
        wait_for(lambda: get(f"{base}/ipxe/{MAC1}").startswith(b"#!ipxe"), what="first manifest")


def test_tftp_answers_per_node_ipxe_scripts_in_the_same_process(tmp_path):
    state = str(tmp_path / "var")
    root = tmp_path / "tftproot"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(b"NBP" * 5000)
    manifest = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1")
    script = store_bytes(state, manifest["nodes"]["n001"]["artifacts"]["ipxe"]["raw"])
    port, tftp_port = free_port(), free_port()
    conf = str(tmp_path / "conf")
    fsutil.atomic_write(os.path.join(conf, "wwfast.yaml"), "warewulf:\n  secure: false\ntftp:\n  enabled: true\n")
    with open(tmp_path / "log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "stages.serve", "--conf", conf,
                                 "--state", state, "--bind", "127.0.0.1", "--http-port", str(port),
                                 "--tftp-port", str(tftp_port), "--tftp-root", str(root)], cwd=ROOT, stderr=err)
    try:
        wait_port(port, proc, log_path=str(tmp_path / "log"))
        for remote, want in (("52-54-00-00-00-01.ipxe", script), ("ipxe/52-54-00-00-00-01", script),
                             ("undionly.kpxe", b"NBP" * 5000)):
            local = tmp_path / "got"
            subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(tftp_port), "-c", "get", remote, str(local)],
                           check=True, timeout=20)
            assert local.read_bytes() == want, remote
        subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(tftp_port), "-c", "get",
                        "52-54-00-aa-bb-cc.ipxe", str(tmp_path / "unknown")], check=True, timeout=20)
        assert b"unknown node" in (tmp_path / "unknown").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert re.search(r"TFTP on 127\.0\.0\.1:\d+", open(tmp_path / "log").read())


def wwfast(*args, **kw):
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "wwfast"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, **kw)


def test_wwfast_serve_and_status_table(tmp_path):
    state, conf = str(tmp_path / "var"), str(tmp_path / "conf")
    publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE"),
                    "n002": make_node(state, "n002", "52:54:00:00:00:02", b"IMAGE")}, "gen-7")
    port = free_port()
    fsutil.atomic_write(os.path.join(conf, "wwfast.yaml"),
                        f"warewulf:\n  port: {port}\n  bind: 127.0.0.1\n  secure: false\ntftp:\n  enabled: false\n")
    with open(tmp_path / "log", "wb") as err:
        proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "wwfast"), "--conf", conf,
                                 "--state", state, "serve"], cwd=ROOT, stderr=err)
    try:
        wait_port(port, proc, log_path=str(tmp_path / "log"))
        for stage in ("ipxe", "kernel", "image", "system", "runtime"):
            get(f"http://127.0.0.1:{port}/{stage}/{MAC1}")
        out = wwfast("--conf", conf, "--state", state, "status")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].split()[:3] == ["NODENAME", "STAGE", "SENT"]
        assert re.match(r"n001\s+RUNTIME OVERLAY\s+[0-9a-f]{64}\.cpio\.zst\s+127\.0\.0\.1\s+\d+\s+[\d.]+", lines[1])
        assert re.match(r"n002\s+--.*never", lines[2])
        assert f"generation gen-7, from http://127.0.0.1:{port}/status" in lines[-1]
        assert wwfast("--conf", conf, "--state", state, "status", "--unknown").stdout.count("\nn0") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    # no server: the saved copy, with rows gone stale marked (update interval 60 s)
    path = os.path.join(state, "serve", "status.json")
    doc = json.load(open(path))
    doc["nodes"]["n001"]["last seen"] = time.time() - 70
    doc["nodes"]["n002"] = {"node name": "n002", "stage": "kernel", "sent": "x.kernel", "ipaddr": "10.0.0.2",
                            "last seen": time.time() - 500, "boot start": 0, "boot end": 0}
    fsutil.atomic_write(path, json.dumps(doc))
    out = wwfast("--conf", conf, "--state", state, "status")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:-1]}
    assert rows["n001"].rstrip().endswith("stale") and rows["n002"].rstrip().endswith("STALE")
    assert "status.json (no server answered" in out.stdout.splitlines()[-1]


def test_secure_from_the_manifest_unless_a_flag_says_otherwise(tmp_path):
    state = str(tmp_path)
    publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1", secure=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/runtime/{MAC1}"
    code = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url]
    with running_server(state, port):          # settings say secure: false, the published manifest true
        assert subprocess.run(code, capture_output=True, text=True).stdout == "403"
    with running_server(state, port, "--no-secure"):
        assert subprocess.run(code, capture_output=True, text=True).stdout == "200"


def test_files_beyond_4_gib_head_and_ranges(tmp_path):
    """Sizes and offsets past 2 and 4 GiB (aiohttp#7263 broke there): a sparse 5 GiB image."""
    state = str(tmp_path)
    manifest = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1")
    big = manifest["nodes"]["n001"]["artifacts"]["image"]["zst"]
    size = (5 << 30) + 123
    marks = {(2 << 30) + 7: b"PAST-2GiB", (4 << 30) + 11: b"PAST-4GiB", size - 9: b"THE-END!!"}
    with open(os.path.join(state, "store", big["file"]), "r+b") as f:
        f.truncate(size)
        for offset, data in marks.items():
            f.seek(offset)
            f.write(data)
    big["size"] = size
    publish(state, manifest["nodes"], "gen-2")
    port = free_port()
    url = f"http://127.0.0.1:{port}/image/{MAC1}"
    with running_server(state, port):
        head = subprocess.run(["curl", "-sSI", url], capture_output=True, text=True, check=True).stdout
        assert f"Content-Length: {size}\n" in head
        for offset, data in marks.items():
            assert get(url, "-r", f"{offset}-{offset + len(data) - 1}") == data
        assert get(url, "-r", "-9") == b"THE-END!!"


def test_a_link_planted_in_the_store_is_not_followed(tmp_path):
    state = str(tmp_path)
    manifest = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1")
    kernel = os.path.join(state, "store", manifest["nodes"]["n001"]["artifacts"]["kernel"]["raw"]["file"])
    os.unlink(kernel)
    os.symlink("/etc/passwd", kernel)
    port = free_port()
    with running_server(state, port):
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/kernel/{MAC1}"],
                             capture_output=True, text=True)
        assert out.stdout.endswith("\n404") and "root:" not in out.stdout


def test_a_large_status_body_reaches_a_slow_reader_whole(tmp_path):
    """/status for 3,000 nodes to a client with a tiny receive window: partial sends resume correctly."""
    import copy
    import socket as socketmod
    state = str(tmp_path)
    one = make_node(state, "n0", MAC1, b"IMAGE")
    nodes = {}
    for i in range(3000):
        node = copy.deepcopy(one)
        node["macs"] = [f"52:54:00:01:{i >> 8:02x}:{i & 255:02x}"]
        nodes[f"node{i:04d}"] = node
    publish(state, nodes, "gen-big")
    port = free_port()
    with running_server(state, port):
        s = socketmod.socket()
        s.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert length == len(body) > 300_000
    assert len(json.loads(body)["nodes"]) == 3000


def tftp_get(port, remote, local):
    """tftp-hpa's client; returns its CompletedProcess (it exits 0 even on a TFTP error: check the file)."""
    return subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", remote, str(local)],
                          capture_output=True, text=True, timeout=20)


def atftp_get(port, remote, local):
    return subprocess.run(["atftp", "-g", "-r", remote, "-l", str(local), "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=20)


def metric(text, name):
    """The value of one sample line `name{labels}` in a /metrics body, or None."""
    match = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_tftp_requests_show_in_status_and_metrics(tmp_path):
    """A node's script fetched over TFTP is its boot's first step in /status, exactly like GET /ipxe;
    /metrics counts every TFTP request (scripts, root files, errors) and the bytes sent."""
    state = str(tmp_path / "var")
    root = tmp_path / "tftproot"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(b"NBP" * 5000)
    manifest = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE")}, "gen-1")
    script_entry = manifest["nodes"]["n001"]["artifacts"]["ipxe"]["raw"]
    port, tftp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port, tftp_port=tftp_port, tftp_root=root):
        assert json.loads(get(f"{base}/status"))["nodes"]["n001"]["stage"] == ""
        tftp_get(tftp_port, "52-54-00-00-00-01.ipxe", tmp_path / "script")
        assert (tmp_path / "script").read_bytes() == store_bytes(state, script_entry)
        rec = json.loads(get(f"{base}/status"))["nodes"]["n001"]
        assert (rec["stage"], rec["sent"], rec["ipaddr"]) == ("ipxe", script_entry["file"], "127.0.0.1"), rec
        assert rec["boot start"] > 0 and rec["boot end"] == 0, rec
        # the boot goes on over HTTP: same boot, not a new one
        get(f"{base}/kernel/{MAC1}")
        after = json.loads(get(f"{base}/status"))["nodes"]["n001"]
        assert after["stage"] == "kernel" and after["boot start"] == rec["boot start"], after
        assert atftp_get(tftp_port, "undionly.kpxe", tmp_path / "nbp").returncode == 0
        assert (tmp_path / "nbp").read_bytes() == b"NBP" * 5000
        tftp_get(tftp_port, "missing.efi", tmp_path / "missing")
        atftp_get(tftp_port, "52-54-00-aa-bb-cc.ipxe", tmp_path / "unknown")
        assert b"unknown node" in (tmp_path / "unknown").read_bytes()
        text = get(f"{base}/metrics").decode()
    assert metric(text, 'wwfast_tftp_requests_total{stage="ipxe",result="ok"}') == 2
    assert metric(text, 'wwfast_tftp_requests_total{stage="file",result="ok"}') == 1
    assert metric(text, 'wwfast_tftp_requests_total{stage="file",result="not_found"}') == 1
    unknown_size = len((tmp_path / "unknown").read_bytes())
    assert metric(text, 'wwfast_tftp_bytes_total{stage="ipxe"}') == script_entry["size"] + unknown_size
    assert metric(text, 'wwfast_tftp_bytes_total{stage="file"}') == 15000
    assert metric(text, 'wwfast_tftp_transfer_events_total{event="started"}') == 3   # the core's own count
    assert metric(text, 'wwfast_nodes_by_stage{stage="kernel"}') == 1


def test_a_publish_after_the_tftp_script_fetch_keeps_the_boot_on_its_generation(tmp_path):
    """The script (and its kernel arguments) came from generation A over TFTP: the node's kernel, image
    and overlays come from A too, though B is published before its first HTTP request."""
    state = str(tmp_path / "var")
    root = tmp_path / "tftproot"
    root.mkdir()
    mac2 = "52:54:00:00:00:02"
    gen_a = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE A"),
                            "n002": make_node(state, "n002", mac2, b"IMAGE A")}, "gen-A")
    port, tftp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"

    def sha_of(manifest, node, stage):
        encodings = manifest["nodes"][node]["artifacts"][stage]
        return (encodings.get("zst") or encodings["raw"])["sha256"]

    with running_server(state, port, tftp_port=tftp_port, tftp_root=root):
        tftp_get(tftp_port, "52-54-00-00-00-01.ipxe", tmp_path / "script")
        assert (tmp_path / "script").read_bytes().startswith(b"#!ipxe\necho node n001\n")
        gen_b = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE B", tag=b"B"),
                                "n002": make_node(state, "n002", mac2, b"IMAGE B", tag=b"B")}, "gen-B")
        wait_for(lambda: b"gen-B" in get(f"{base}/healthz"), what="manifest reload")
        for stage in ("kernel", "image", "system", "runtime"):
            assert sha(get(f"{base}/{stage}/{MAC1}")) == sha_of(gen_a, "n001", stage), stage
        # a node that did not start its boot before the publish gets B; so does n001's next boot
        assert sha(get(f"{base}/kernel/{mac2}")) == sha_of(gen_b, "n002", "kernel")
        tftp_get(tftp_port, "52-54-00-00-00-01.ipxe", tmp_path / "script")
        assert (tmp_path / "script").read_bytes().endswith(b"B")
        assert sha(get(f"{base}/kernel/{MAC1}")) == sha_of(gen_b, "n001", "kernel")
