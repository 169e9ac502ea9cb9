"""The HTTP provisioning server against real curl: routes, HEAD, ranges, keep-alive, asset keys,
secure mode, traversal, malformed requests, many concurrent clients, and a publish mid-download.

Each module-level server runs `python -m stages.serve` under uvloop and under plain asyncio.
"""
import hashlib
import json
import os
import re
import socket
import subprocess
import time

import pytest

from serve_helpers import free_port, make_node, publish, running_server, store_bytes

MAC1, MAC2, MAC3, MAC4 = ("52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04")
STAGES = ("ipxe", "kernel", "image", "system", "runtime")


def curl(*args, check=True):
    """Run curl; returns (http_code, body bytes, stderr text). -w puts the code on the last line of stdout."""
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args],
                         capture_output=True, timeout=30)
    body, _, code = out.stdout.rpartition(b"\n")
    if check and out.returncode != 0:
        raise AssertionError(f"curl {args} failed ({out.returncode}): {out.stderr.decode()}")
    return int(code or 0), body, out.stderr.decode(errors="replace")


def entry(manifest, node, stage, enc=None):
    encs = manifest["nodes"][node]["artifacts"][stage]
    return encs[enc] if enc else encs.get("zst") or encs["raw"]


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def served(request, tmp_path_factory):
    state = str(tmp_path_factory.mktemp("serve"))
    image = os.urandom(1 << 20)
    nodes = {
        "n001": make_node(state, "n001", MAC1, image),
        "n002": make_node(state, "n002", MAC2, image, asset_key="sekrit"),
        "n003": make_node(state, "n003", MAC3, image, address="127.0.0.1"),
        "n004": make_node(state, "n004", MAC4, image, address="10.9.9.9"),
    }
    manifest = publish(state, nodes, "gen-1")
    port = free_port()
    with running_server(state, port, "--loop", request.param, "--header-timeout", "1", "--idle-timeout", "2") as proc:
        yield {"state": state, "port": port, "base": f"http://127.0.0.1:{port}", "manifest": manifest,
               "proc": proc, "loop": request.param}


def test_every_stage_serves_the_published_bytes(served):
    base, state, manifest = served["base"], served["state"], served["manifest"]
    for stage in STAGES:
        want = store_bytes(state, entry(manifest, "n001", stage))
        for url in (f"{base}/{stage}/{MAC1}", f"{base}/{stage}/52-54-00-00-00-01",
                    f"{base}/{stage}?wwid=52-54-00-00-00-01",
                    f"{base}/provision/{MAC1}?stage={stage}", f"{base}/provision?wwid={MAC1}&stage={stage}"):
            code, body, _ = curl(url)
            assert (code, hashlib.sha256(body).hexdigest()) == (200, hashlib.sha256(want).hexdigest()), url
    # Warewulf's deprecated alias and the default stage of /provision
    assert curl(f"{base}/container/{MAC1}")[1] == store_bytes(state, entry(manifest, "n001", "image"))
    assert curl(f"{base}/provision/{MAC1}")[1] == store_bytes(state, entry(manifest, "n001", "ipxe"))
    assert curl(f"{base}//image//{MAC1}")[0] == 200        # '//' collapses, as Warewulf's slashFix


def test_compress_picks_the_encoding(served):
    base, state, manifest = served["base"], served["state"], served["manifest"]
    for stage in ("image", "system", "runtime"):
        for enc in ("gz", "zst"):
            want = store_bytes(state, entry(manifest, "n001", stage, enc))
            assert curl(f"{base}/{stage}/{MAC1}?compress={enc}")[1] == want
    code, body, _ = curl(f"{base}/image/{MAC1}?compress=xz")
    assert code == 400 and b"xz" in body
    # raw artifacts (kernel, script) have one encoding: served whatever compress asks for
    for url, stage in ((f"/kernel/{MAC1}?compress=gz", "kernel"), (f"/kernel/{MAC1}?compress=zst", "kernel"),
                       (f"/ipxe/{MAC1}?compress=gz", "ipxe"), (f"/ipxe/{MAC1}?compress=zstd", "ipxe"),
                       (f"/provision/{MAC1}?stage=kernel&compress=gz", "kernel"),
                       (f"/provision/{MAC1}?compress=gz", "ipxe")):
        code, body, _ = curl(base + url)
        assert (code, body) == (200, store_bytes(state, entry(manifest, "n001", stage))), url
    code, body, _ = curl(f"{base}/ipxe/52:54:00:aa:bb:cc?compress=gz")
    assert code == 200 and b"unknown node" in body
    code, body, _ = curl(f"{base}/kernel/{MAC1}?compress=xz")
    assert code == 400 and b"xz" in body


def test_head_and_validators(served):
    base, manifest = served["base"], served["manifest"]
    art = entry(manifest, "n001", "image")
    out = subprocess.run(["curl", "-sS", "-I", f"{base}/image/{MAC1}"], capture_output=True, text=True, check=True)
    headers = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines()[1:])
    assert out.stdout.startswith("HTTP/1.1 200")
    assert int(headers["Content-Length"]) == art["size"]
    assert headers["ETag"] == f'"{art["sha256"]}"'
    assert "GMT" in headers["Last-Modified"]
    code, body, _ = curl("-H", f'If-None-Match: "{art["sha256"]}"', f"{base}/image/{MAC1}")
    assert (code, body) == (304, b"")
    assert curl("-H", 'If-None-Match: "other"', f"{base}/image/{MAC1}")[0] == 200


def test_single_ranges(served):
    base, state, manifest = served["base"], served["state"], served["manifest"]
    data = store_bytes(state, entry(manifest, "n001", "image"))
    size = len(data)
    assert curl("-r", "100-199", f"{base}/image/{MAC1}")[:2] == (206, data[100:200])
    assert curl("-r", f"{size - 10}-", f"{base}/image/{MAC1}")[:2] == (206, data[-10:])
    assert curl("-r", "-300", f"{base}/image/{MAC1}")[:2] == (206, data[-300:])
    assert curl("-r", f"0-{size * 2}", f"{base}/image/{MAC1}")[:2] == (206, data)
    out = subprocess.run(["curl", "-sS", "-i", "-r", f"{size}-{size + 5}", f"{base}/image/{MAC1}"],
                         capture_output=True, text=True)
    assert out.stdout.startswith("HTTP/1.1 416") and f"Content-Range: bytes */{size}" in out.stdout
    # If-Range with a stale validator: the whole file, not the range
    assert curl("-r", "0-9", "-H", 'If-Range: "stale"', f"{base}/image/{MAC1}")[:2] == (200, data)
    # several ranges: we answer with the whole file (allowed by RFC 9110)
    assert curl("-r", "0-9,20-29", f"{base}/image/{MAC1}")[:2] == (200, data)


def test_keep_alive_reuses_the_connection(served):
    base = served["base"]
    out = subprocess.run(["curl", "-sv", "-o", "/dev/null", "-o", "/dev/null", f"{base}/ipxe/{MAC1}",
                          f"{base}/image/{MAC1}"], capture_output=True, text=True, check=True)
    assert "Re-using existing connection" in out.stderr, out.stderr


def test_asset_key(served):
    base = served["base"]
    assert curl(f"{base}/kernel/{MAC2}")[0] == 401
    assert curl(f"{base}/kernel/{MAC2}?assetkey=wrong")[0] == 401
    assert curl(f"{base}/ipxe/{MAC2}?assetkey=sekri")[0] == 401
    assert curl(f"{base}/kernel/{MAC2}?assetkey=sekrit")[0] == 200
    status = json.loads(curl(f"{base}/status")[1])
    assert status["nodes"]["n002"]["stage"] == "kernel"


def test_unknown_and_bad_requests(served):
    base = served["base"]
    code, body, _ = curl(f"{base}/ipxe/52-54-00-AA-BB-CC")
    assert code == 200 and b"unknown node" in body
    code, body, _ = curl(f"{base}/image/52:54:00:aa:bb:cc")
    assert code == 404 and b"52:54:00:aa:bb:cc" in body
    code, body, _ = curl(f"{base}/image/not-a-mac")
    assert code == 400 and b"MAC" in body
    assert curl(f"{base}/nope/{MAC1}")[0] == 404
    assert curl(f"{base}/")[0] == 404
    assert curl(f"{base}/provision/{MAC1}?stage=bogus")[0] == 400
    assert curl("-X", "POST", f"{base}/ipxe/{MAC1}")[0] == 405
    code, body, _ = curl(f"{base}/healthz")
    assert code == 200 and b"gen-1" in body


@pytest.mark.parametrize("path", [
    "/image/../../etc/passwd", "/image/%2e%2e/%2e%2e/etc/passwd", "/image/..%2f..%2f..%2fetc%2fpasswd",
    "/kernel/%2e%2e%2F%2e%2e%2Fetc%2Fpasswd", "/ipxe/..%5c..%5cetc%5cpasswd", "/../../../../etc/passwd",
    "/store/../publish/manifest.json", "/image/%00", "/runtime/52:54:00:00:00:01/../../../etc/passwd",
])
def test_traversal_never_leaves_the_store(served, path):
    code, body, _ = curl("--path-as-is", served["base"] + path)
    assert code in (400, 404), (path, code)
    assert b"root:" not in body and b"generation" not in body
    assert curl(f"{served['base']}/ipxe/{MAC1}")[0] == 200      # still serving


def raw_exchange(port, payload, wait=None, read_timeout=5):
    """Send raw bytes (optionally in pieces with pauses); return everything the server sends back."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        for piece in payload if isinstance(payload, list) else [payload]:
            if isinstance(piece, (int, float)):
                time.sleep(piece)
            else:
                s.sendall(piece)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return data


def trickle_until_answered(port, first, piece, pause=0.2, backstop=60):
    """Send `first`, then `piece` every `pause` s for as long as the server says nothing; return (what it
    sent until it closed, pieces sent). Nothing here depends on how fast either side runs: the server
    either answers a client that never stops sending, or the backstop fails the test."""
    import select
    with socket.create_connection(("127.0.0.1", port), timeout=backstop) as s:
        s.sendall(first)
        pieces, deadline = 0, time.monotonic() + backstop
        while not select.select([s], [], [], pause)[0]:
            assert time.monotonic() < deadline, f"no answer in {backstop} s to a request whose headers never end"
            try:
                s.sendall(piece)
                pieces += 1
            except (BrokenPipeError, ConnectionResetError):
                break                        # it answered and closed between our select and our send
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data, pieces


def test_malformed_requests_get_errors_and_the_server_keeps_serving(served):
    port, base = served["port"], served["base"]
    assert raw_exchange(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_exchange(port, b"GET /ipxe/x HTTP/9.9.9\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_exchange(port, b"GET /ipxe HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n").startswith(
        b"HTTP/1.1 400")
    huge = b"GET /ipxe/" + MAC1.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw_exchange(port, huge).startswith(b"HTTP/1.1 431")
    body = b"GET /ipxe/" + MAC1.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000
    assert raw_exchange(port, body).startswith(b"HTTP/1.1 413")
    long_url = b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\n\r\n"
    assert raw_exchange(port, long_url).startswith(b"HTTP/1.1 431")
    # slowloris: headers trickle in and never end; a header line keeps coming until the server answers.
    # --header-timeout 1 counts from the request's first byte, so the trickle cannot keep it open: 408.
    reply, pieces = trickle_until_answered(port, b"GET /ipxe/" + MAC1.encode() + b" HTTP/1.1\r\n", b"X-A: b\r\n")
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert pieces >= 1, "the server answered before the trickle began"
    # HTTP/1.0 with a half-close after the request (busybox nc, as the node agent uses it)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /runtime/{MAC1} HTTP/1.0\r\n\r\n".encode())
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert body == store_bytes(served["state"], entry(served["manifest"], "n001", "runtime"))
    # a pipelined pair on one connection: both answered in order
    pair = (f"GET /ipxe/{MAC1} HTTP/1.1\r\nHost: x\r\n\r\n"
            f"GET /ipxe/{MAC3} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    reply = raw_exchange(port, pair)
    assert reply.count(b"HTTP/1.1 200") == 2 and reply.index(b"node n001") < reply.index(b"node n003")
    assert curl(f"{base}/ipxe/{MAC1}")[0] == 200
    metrics = curl(f"{base}/metrics")[1].decode()
    assert re.search(r'wwfast_http_requests_total\{stage="bad",code="431"\} [1-9]', metrics)
    assert re.search(r'wwfast_http_requests_total\{stage="bad",code="408"\} [1-9]', metrics)


def test_many_concurrent_clients_get_every_byte(served, tmp_path):
    """300 connections at once (one curl --parallel process), each file checked by sha256."""
    base, manifest = served["base"], served["manifest"]
    want = {stage: entry(manifest, "n001", stage)["sha256"] for stage in STAGES}
    args = ["curl", "-sS", "--parallel", "--parallel-immediate", "--parallel-max", "300", "--max-time", "60"]
    jobs = []
    for i in range(300):
        stage = STAGES[i % len(STAGES)] if i % 3 else "image"
        jobs.append((tmp_path / f"{i}.out", stage))
        args += ["-o", str(tmp_path / f"{i}.out"), f"{base}/{stage}/{MAC1}"]
    subprocess.run(args, check=True, timeout=90)
    for path, stage in jobs:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == want[stage], (path, stage)
    metrics = curl(f"{base}/metrics")[1].decode()
    assert "wwfast_http_transfers_in_flight 0" in metrics


def test_metrics_and_status_routes(served):
    base = served["base"]
    for stage in STAGES:
        assert curl(f"{base}/{stage}/{MAC3}")[0] == 200
    status = json.loads(curl(f"{base}/status")[1])
    n3 = status["nodes"]["n003"]
    assert n3["stage"] == "runtime" and n3["ipaddr"] == "127.0.0.1"
    assert n3["boot start"] > 0 and n3["boot end"] >= n3["boot start"]
    assert status["generation"] == "gen-1"
    metrics = curl(f"{base}/metrics")[1].decode()
    assert re.search(r'wwfast_http_requests_total\{stage="image",code="200"\} [1-9]', metrics)
    assert re.search(r'wwfast_http_sent_bytes_total\{stage="kernel",code="200"\} [1-9]', metrics)
    assert re.search(r'wwfast_nodes_by_stage\{stage="runtime"\} [1-9]', metrics)
    assert re.search(r"wwfast_boot_duration_seconds_count [1-9]", metrics)
    assert 'wwfast_manifest_info{generation="gen-1"} 1' in metrics


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("secure"))
    image = os.urandom(4096)
    nodes = {"n001": make_node(state, "n001", MAC1, image),
             "n003": make_node(state, "n003", MAC3, image, address="127.0.0.1"),
             "n004": make_node(state, "n004", MAC4, image, address="10.9.9.9")}
    manifest = publish(state, nodes, "gen-s")
    port = free_port()
    with running_server(state, port, settings="warewulf:\n  secure: true\n"):
        yield {"base": f"http://127.0.0.1:{port}", "state": state, "manifest": manifest}


def test_secure_mode_runtime_only_from_a_privileged_port(secure_server):
    base, state, manifest = secure_server["base"], secure_server["state"], secure_server["manifest"]
    want = store_bytes(state, entry(manifest, "n003", "runtime"))
    assert curl("--local-port", "600-700", f"{base}/runtime/{MAC3}")[:2] == (200, want)
    code, body, _ = curl("--local-port", "40000-40100", f"{base}/runtime/{MAC3}")
    assert code == 403 and b"privileged" in body
    assert curl(f"{base}/runtime/{MAC3}")[0] == 403
    # a node with no configured address: the port rule alone
    assert curl("--local-port", "600-700", f"{base}/runtime/{MAC1}")[0] == 200
    # the node's address is 10.9.9.9: a low port from elsewhere is still refused
    assert curl("--local-port", "600-700", f"{base}/runtime/{MAC4}")[0] == 403
    assert json.loads(curl(f"{base}/status")[1])["nodes"]["n004"]["sent"] == "BAD_PORT"
    # other stages stay open to anyone
    assert curl(f"{base}/image/{MAC4}")[0] == 200


def read_reply(s):
    """One whole HTTP reply (headers and Content-Length body) from a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed mid-reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return head, body


def test_idle_keep_alive_connections_are_closed(served):
    """Kept alive between requests, closed once idle past --idle-timeout 2: the server's log names this
    connection as closed for being idle (a record, not a stopwatch on the client's side)."""
    log_path = os.path.join(served["state"], "serve.log")
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=60) as s:    # 60: a backstop
        port = s.getsockname()[1]
        for mac in (MAC1, MAC3):            # two requests on one connection: it stays open after a reply
            s.sendall(f"GET /ipxe/{mac} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, _ = read_reply(s)
            assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        assert s.recv(65536) == b""            # then closed by the server
    with open(log_path, errors="replace") as f:
        assert f"127.0.0.1:{port}: keep-alive connection idle for 2 s; closed" in f.read()
    metrics = curl(f"{served['base']}/metrics")[1].decode()
    assert re.search(r'wwfast_http_connections_closed_total\{reason="idle"\} [1-9]', metrics), metrics


def _server_send_queue(port, client_port):
    """Bytes the kernel holds for the server's side of one connection (ss: skmem w = wmem_queued)."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"skmem:\(.*?\bw(\d+)", out)
    assert found, out
    return int(found.group(1))


def test_a_reader_that_stops_holds_a_bounded_send_queue(tmp_path):
    """A node that stops reading mid-image leaves at most the unsent cap (NOTSENT_LOWAT) queued in the
    server's socket, not a send buffer grown to megabytes: a storm of thousands of nodes must not
    push the machine into TCP memory pressure (drops, RTO stalls). Read off the kernel's own record."""
    from wwfast.server.http import NOTSENT_LOWAT
    state = str(tmp_path)
    nodes = {"n001": make_node(state, "n001", MAC1, os.urandom(48 << 20))}
    publish(state, nodes, "gen-q")
    port = free_port()
    with running_server(state, port), socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(f"GET /image/{MAC1}?compress=none HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        client_port = s.getsockname()[1]
        queued, previous = _server_send_queue(port, client_port), -1
        for _ in range(100):                  # until the server's queue stops growing (the cap is reached)
            if queued == previous:
                break
            time.sleep(0.1)
            previous, queued = queued, _server_send_queue(port, client_port)
        assert 0 < queued <= NOTSENT_LOWAT + (256 << 10), queued


@pytest.mark.parametrize("send_mode", ["sendfile", "mmap"])
def test_a_transfer_ends_when_its_last_send_began_not_when_the_server_gets_the_cpu_back(tmp_path, monkeypatch,
                                                                                          send_mode):
    """On a loaded machine the server may get its CPU back long after its last send returned, and the
    node has read every byte by then. The boot record's end is the moment the last send began, so it
    never lies after the node's own end. Here each send 'takes' 100 s of the server's clock."""
    import asyncio
    from wwfast.server import http as http_module, loops
    from wwfast.server.catalog import CatalogWatcher
    from wwfast.server.http_server import HttpServer
    from wwfast.server.ledger import BootLedger
    from wwfast.server.provision import Provisioner

    state = str(tmp_path)
    publish(state, {"n001": make_node(state, "n001", MAC1, os.urandom(300_000))}, "gen-1")
    watcher = CatalogWatcher(state)
    watcher.check()
    now = [1000.0]
    ledger = BootLedger(state, clock=lambda: now[0])
    sends = []

    def slow(real):
        def send(*args):
            sends.append(now[0])
            n = real(*args)
            now[0] += 100.0          # the server is descheduled right after its send returned
            return n
        return send
    monkeypatch.setattr(http_module.os, "sendfile", slow(os.sendfile))
    real_socket_send = socket.socket.send
    monkeypatch.setattr(http_module.socket.socket, "send",
                        lambda self, data, *flags: slow(lambda: real_socket_send(self, data, *flags))())

    async def fetch():
        port = free_port()
        async with HttpServer(Provisioner(watcher, ledger), "127.0.0.1", port, send_mode=send_mode):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /image/{MAC1} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            body = await reader.read()
            writer.close()
            return body

    assert b"200 OK" in loops.run(fetch()).split(b"\r\n", 1)[0]
    request = ledger.status.nodes["n001"]["boot"]["requests"][-1]
    assert request["result"] == "ok" and request["bytes"] > 0
    body_sends = [t for t in sends if t > request["start"]]
    assert request["end"] == body_sends[-1] < now[0], (request, sends)
