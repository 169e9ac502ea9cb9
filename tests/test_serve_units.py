"""Small pure functions of the serve stage: range parsing, MAC normalisation, manifest checks,
Prometheus rendering, the TFTP resolver and request reports, and status bookkeeping (boot start/end,
saved atomically)."""
import asyncio
import json
import os
import subprocess
import time

import pytest

from serve_helpers import make_node, publish, store_bytes
from tftp_support import ServerThread, client_socket, rrq, twin_params
from wwfast.server import loops
from wwfast.server.catalog import Catalog, CatalogWatcher, ManifestError, normalise_mac
from wwfast.server.conditional import parse_range
from wwfast import fsutil
from wwfast.server.bootrecord import CAP
from wwfast.server.ledger import BootLedger
from wwfast.server.provision import Provisioner
from wwfast.server.tftp_scripts import script_mac
from wwfast.server.metrics import Metrics
from wwfast.server.status import StatusBook, read_status


@pytest.mark.parametrize("header,expected", [
    ("bytes=0-9", (0, 10)), ("bytes=10-", (10, 100)), ("bytes=-5", (95, 100)), ("bytes=90-200", (90, 100)),
    ("bytes=-500", (0, 100)), ("bytes=100-", "unsatisfiable"), ("bytes=-0", "unsatisfiable"),
    ("bytes=5-1", None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=a-b", None), ("bytes=-", None),
    ("bytes=1", None), ("bytes= 3 - 4 ", (3, 5)),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


def test_normalise_mac():
    assert normalise_mac("52-54-00-AB-cd-EF") == "52:54:00:ab:cd:ef"
    for bad in ("", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:00", "zz:54:00:ab:cd:ef", "../../etc/passwd"):
        assert normalise_mac(bad) is None


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "x.cpio.zst", "A" * 64 + ".kernel",
                                  "a" * 64 + ".cpio.zst/../../x"])
def test_manifest_naming_a_file_outside_the_store_is_refused(tmp_path, name):
    state = str(tmp_path)
    manifest = publish(state, {"n001": make_node(state, "n001", "52:54:00:00:00:01", b"I"),
                               "n002": make_node(state, "n002", "52:54:00:00:00:02", b"I")}, "g")
    manifest["nodes"]["n001"]["artifacts"]["image"]["zst"]["file"] = name
    catalog = Catalog(manifest, os.path.join(state, "store"))
    assert "store file name" in catalog.unserved["n001"]
    assert "52:54:00:00:00:01" not in catalog.by_mac and set(catalog.nodes) == {"n002"}


def test_normalise_mac_accepts_eui64_and_infiniband():
    ib = "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3"
    assert normalise_mac(ib.upper().replace(":", "-")) == ib
    assert normalise_mac("02:00:00:ff:fe:00:00:01") == "02:00:00:ff:fe:00:00:01"
    for bad in ("52:54:00-ab:cd:ef", "52:54:00:ab:cd:ef:00", ib + ":00", "5:54:00:ab:cd:ef"):
        assert normalise_mac(bad) is None, bad


@pytest.mark.parametrize("spoil,reason", [
    (lambda n: n["n001"].update(macs=["80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2"]), "not a MAC"),
    (lambda n: n["n001"].update(macs="52:54:00:00:00:01"), "expected a list"),
    (lambda n: n["n001"].update(macs=[]), "no MAC address"),
    (lambda n: n["n001"]["artifacts"].update(firmware={}), "unknown stage"),
    (lambda n: n["n001"]["artifacts"]["kernel"]["raw"].update(sha256=None), "not a sha256"),
    (lambda n: n.update(n001=[]), "expected an object"),
])
def test_one_odd_node_is_left_out_with_its_reason_and_the_rest_are_served(tmp_path, spoil, reason):
    """Issue 11: no single node can make serve refuse a manifest."""
    state = str(tmp_path)
    ib = "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3"
    nodes = {"n001": make_node(state, "n001", "52:54:00:00:00:01", b"I"),
             "n002": make_node(state, "n002", "52:54:00:00:00:02", b"I"),
             "n003": make_node(state, "n003", "52:54:00:00:00:03", b"I")}
    nodes["n003"]["macs"].append(ib)                 # an InfiniBand device beside its Ethernet one
    spoil(nodes)
    catalog = Catalog(publish(state, nodes, "g"), os.path.join(state, "store"))
    assert list(catalog.unserved) == ["n001"] and reason in catalog.unserved["n001"], catalog.unserved
    assert catalog.by_mac["52:54:00:00:00:02"].id == "n002"
    assert catalog.by_mac["52:54:00:00:00:03"] is catalog.by_mac[ib] is catalog.nodes["n003"]


def test_a_mac_two_nodes_claim_serves_neither(tmp_path):
    state = str(tmp_path)
    nodes = {n: make_node(state, n, f"52:54:00:00:00:0{i}", b"I") for i, n in enumerate(("n001", "n002", "n003"))}
    nodes["n001"]["macs"].append("52:54:00:00:00:01")
    catalog = Catalog(publish(state, nodes, "g"), os.path.join(state, "store"))
    assert catalog.unserved == {"n001": "nodes.n001.macs: 52:54:00:00:00:01 is also the MAC of n002",
                                "n002": "nodes.n002.macs: 52:54:00:00:00:01 is also the MAC of n001"}
    assert set(catalog.by_mac) == {"52:54:00:00:00:02"} and set(catalog.nodes) == {"n003"}


def test_watcher_keeps_the_last_good_manifest(tmp_path):
    state = str(tmp_path)
    publish(state, {"n001": make_node(state, "n001", "52:54:00:00:00:01", b"I")}, "g1")
    w = CatalogWatcher(state)
    assert w.check() and w.current.generation == "g1"
    assert not w.check()                                   # unchanged file: no reload
    with open(os.path.join(state, "publish", "manifest.json"), "w") as f:
        json.dump({"format": 2}, f)
    assert not w.check() and w.current.generation == "g1"
    publish(state, {"n002": make_node(state, "n002", "52:54:00:00:00:02", b"I")}, "g2")
    assert w.check() and set(w.current.nodes) == {"n002"}


def test_tftp_resolver(tmp_path):
    state = str(tmp_path)
    m = publish(state, {"n001": make_node(state, "n001", "52:54:00:00:00:01", b"I")}, "g1")
    w = CatalogWatcher(state)
    w.check()
    resolve = Provisioner(w, BootLedger(state)).tftp_resolve
    script = store_bytes(state, m["nodes"]["n001"]["artifacts"]["ipxe"]["raw"])
    for path in ("52-54-00-00-00-01.ipxe", "ipxe/52:54:00:00:00:01", "ipxe/52-54-00-00-00-01.ipxe"):
        assert resolve(path) == script, path
    assert b"unknown node" in resolve("52-54-00-00-00-99.ipxe")
    for path in ("undionly.kpxe", "52-54-00-00-00-01", "ipxe.efi", "x.ipxe"):
        assert resolve(path) is None, path


def test_script_mac():
    for path in ("52-54-00-00-00-01.ipxe", "/52:54:00:00:00:01.ipxe", "ipxe/52-54-00-00-00-01",
                 "ipxe/52-54-00-00-00-01.ipxe"):
        assert script_mac(path) == "52:54:00:00:00:01", path
    for path in ("undionly.kpxe", "52-54-00-00-00-01", "x.ipxe", "ipxe/x", "sub/52-54-00-00-00-01.ipxe"):
        assert script_mac(path) is None, path


def test_tftp_resolver_pins_the_boot_to_the_generation_of_the_script(tmp_path):
    """The TFTP script fetch starts the boot, as GET /ipxe does: a publish before /kernel changes nothing."""
    state = str(tmp_path)
    publish(state, {"n001": make_node(state, "n001", "52:54:00:00:00:01", b"I")}, "g1")
    w = CatalogWatcher(state)
    w.check()
    first = w.current
    ledger = BootLedger(state)
    pins = ledger.pins
    assert Provisioner(w, ledger).tftp_resolve("52-54-00-00-00-01.ipxe").startswith(b"#!ipxe")
    publish(state, {"n001": make_node(state, "n001", "52:54:00:00:00:01", b"I", tag=b"2")}, "g2")
    assert w.check() and w.current is not first
    assert pins.pinned("52:54:00:00:00:01", w.current) is first
    assert pins.catalog_for("52:54:00:00:00:01", "kernel", w.current) is first
    assert pins.pinned("52:54:00:00:00:99", w.current) is w.current


@pytest.mark.parametrize("core_name", twin_params())
def test_tftp_server_reports_each_request_once(tmp_path, core_name):
    """on_request hears every read request's outcome once (real tftp-hpa and atftp clients)."""
    (tmp_path / "undionly.kpxe").write_bytes(b"N" * 3000)
    heard = []
    with ServerThread(str(tmp_path), core_name, on_request=lambda *a: heard.append(a), retries=1) as srv:
        subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(srv.port), "-c", "get", "undionly.kpxe",
                        str(tmp_path / "got")], check=True, timeout=20)
        subprocess.run(["atftp", "-g", "-r", "missing.efi", "-l", str(tmp_path / "none"), "127.0.0.1",
                        str(srv.port)], capture_output=True, timeout=20)
        subprocess.run(["atftp", "-g", "-r", "../etc/passwd", "-l", str(tmp_path / "none"), "127.0.0.1",
                        str(srv.port)], capture_output=True, timeout=20)
        s = client_socket()
        s.sendto(b"\0\2upload\0octet\0", ("127.0.0.1", srv.port))        # WRQ: refused
        s.recvfrom(1000)
        s.sendto(rrq("undionly.kpxe"), ("127.0.0.1", srv.port))
        s.sendto(rrq("undionly.kpxe"), ("127.0.0.1", srv.port))             # a retransmitted RRQ
        deadline = time.monotonic() + 60      # a backstop: the six on_request calls are what we wait for
        while len(heard) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        s.close()
    assert (tmp_path / "got").read_bytes() == b"N" * 3000
    assert [(path, result, nbytes) for path, _client, result, nbytes in heard] == [
        ("undionly.kpxe", "ok", 3000), ("missing.efi", "not_found", 0), (None, "access_denied", 0),
        (None, "access_denied", 0), ("undionly.kpxe", "ok", 3000), ("undionly.kpxe", "duplicate", 0)]
    assert all(client[0] == "127.0.0.1" and client[1] > 0 for _path, client, _r, _n in heard)


def test_metrics_text_format():
    m = Metrics()
    m.request("image", 200)
    m.sent("image", 200, 1234)
    m.boot.observe(12.5)
    m.boot.observe(400)
    text = m.render({"runtime": 3, "none": 1}, 'gen"1')
    assert 'wwfast_http_requests_total{stage="image",code="200"} 1' in text
    assert 'wwfast_http_sent_bytes_total{stage="image",code="200"} 1234' in text
    assert 'wwfast_boot_duration_seconds_bucket{le="10"} 0' in text
    assert 'wwfast_boot_duration_seconds_bucket{le="20"} 1' in text
    assert 'wwfast_boot_duration_seconds_bucket{le="600"} 2' in text
    assert 'wwfast_boot_duration_seconds_bucket{le="+Inf"} 2' in text
    assert 'wwfast_nodes_by_stage{stage="runtime"} 3' in text
    assert 'generation="gen\\"1"' in text
    m.tftp_request("ipxe", "ok", 512)
    m.tftp_request("file", "not_found", 0)
    text = m.render({}, "g")
    assert 'wwfast_tftp_requests_total{stage="ipxe",result="ok"} 1' in text
    assert 'wwfast_tftp_requests_total{stage="file",result="not_found"} 1' in text
    assert 'wwfast_tftp_bytes_total{stage="ipxe"} 512' in text and 'tftp_bytes_total{stage="file"}' not in text
    for line in text.splitlines():          # every sample line: name{labels} value
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_status_book_boot_times_and_debounced_atomic_save(tmp_path):
    state = str(tmp_path)
    clock = [1000.0]
    ledger = BootLedger(state, status_debounce=0.05, clock=lambda: clock[0])
    book = ledger.status

    async def scenario():
        ledger.attach(asyncio.get_running_loop())
        ledger.began("n001", "ipxe", "a.ipxe", "10.0.0.1", length=10)
        clock[0] = 1010.0
        ledger.began("n001", "kernel", "k.kernel", "10.0.0.1", length=10)
        ledger.refused("n001", "runtime", "BAD_ASSET", "10.0.0.1")
        runtime = ledger.began("n001", "runtime", "r.cpio.zst", "10.0.0.1", length=10)
        again = ledger.began("n001", "runtime", "r.cpio.zst", "10.0.0.1", length=10)
        clock[0] = 1030.0
        ledger.ended(runtime, 10, True)
        assert book.nodes["n001"]["boot end"] == 1030.0
        ledger.ended(again, 10, True)       # agent refreshes do not end a boot again
        assert ledger.metrics.boot.count == 1
        ledger.refused("n001", "runtime", "BAD_ASSET", "10.0.0.1")
        # the debounced save runs on its own (in a thread): wait for the file to say so (a backstop
        # deadline for a loaded machine, not a guess of how long the save takes)
        deadline = time.monotonic() + 30
        while read_status(state)["nodes"].get("n001", {}).get("sent") != "BAD_ASSET":
            assert time.monotonic() < deadline, "the debounced save never happened"
            await asyncio.sleep(0.02)
        saved = read_status(state)["nodes"]["n001"]
        assert (saved["boot start"], saved["boot end"], saved["sent"]) == (1000.0, 1030.0, "BAD_ASSET")
        clock[0] = 1100.0
        ledger.began("n001", "kernel", "k.kernel", "10.0.0.1")    # a kernel fetch after a finished boot
        await ledger.close()

    loops.run(scenario())
    rec = StatusBook(state).nodes["n001"]
    assert (rec["boot start"], rec["boot end"], rec["stage"]) == (1100.0, 0, "kernel")
    with open(os.path.join(state, "serve", "status.json"), "w") as f:
        f.write("{broken")
    assert StatusBook(state).nodes == {}                  # a damaged file never stops the server...
    assert open(os.path.join(state, "serve", "status.json.damaged")).read() == "{broken"   # ...nor is lost


def test_boot_records_are_bounded_and_survive_a_restart(tmp_path):
    """At most CAP requests per boot (the first CAP-1 and the latest), after a boot's end only the latest
    AFTER (the agent's refreshes); `dropped` counts the others. The boot before is kept as "last boot",
    and a transfer in flight at shutdown reads back as cut short."""
    state = str(tmp_path)
    clock = [1000.0]
    ledger = BootLedger(state, clock=lambda: clock[0])
    ledger.ended(ledger.began("n001", "ipxe", "a.ipxe", "10.0.0.1", length=5, generation="g1"), 5, True)
    first_boot = ledger.status.nodes["n001"]["boot"]
    ledger.began("n001", "ipxe", "b.ipxe", "10.0.0.1", length=5, generation="g2")   # a second boot
    for i in range(CAP + 20):
        clock[0] += 1
        t = ledger.began("n001", "runtime", f"{i}.cpio.zst", "10.0.0.1", length=7, generation="g2")
        ledger.ended(t, 7 if i % 2 else 3, bool(i % 2))     # the first whole one (i = 1) ends the boot
    in_flight = ledger.began("n001", "runtime", "last.cpio.gz", "10.0.0.1", length=9, generation="g2")
    rec = ledger.status.nodes["n001"]
    boot = rec["boot"]
    assert rec["last boot"] is first_boot and boot["generation"] == "g2"
    files = [r["file"] for r in boot["requests"]]
    assert files == ["b.ipxe", "0.cpio.zst", "1.cpio.zst"] + [f"{i}.cpio.zst" for i in (CAP + 17, CAP + 18, CAP + 19)] \
        + ["last.cpio.gz"], files
    assert boot["booted"] == 3 and boot["dropped"] == (1 + CAP + 20 + 1) - len(files)
    assert boot["requests"][1]["result"] == "cut short" and boot["requests"][1]["bytes"] == 3
    assert boot["requests"][2]["result"] == "ok" and boot["end"] == boot["requests"][2]["end"]
    assert boot["requests"][-1]["encoding"] == "gz" and in_flight.seq == boot["requests"][-1]["seq"]
    # a boot that never ends (every transfer cut short): the first CAP-1 requests and the latest
    ledger.began("n002", "ipxe", "c.ipxe", "10.0.0.2", length=5)
    for i in range(CAP + 10):
        ledger.ended(ledger.began("n002", "kernel", f"{i}.kernel", "10.0.0.2", length=7), 1, False)
    files = [r["file"] for r in ledger.status.nodes["n002"]["boot"]["requests"]]
    assert files == ["c.ipxe"] + [f"{i}.kernel" for i in range(CAP - 2)] + [f"{CAP + 9}.kernel"]
    assert ledger.status.nodes["n002"]["boot"]["dropped"] == 11
    loops.run(ledger.close())
    again = StatusBook(state).nodes["n001"]
    assert again["last boot"] == first_boot and again["boot"]["booted"] == 3
    last = again["boot"]["requests"][-1]
    assert (last["result"], last["reason"]) == ("cut short", "server stopped")
    # a damaged record in the saved file never stops the server
    doc = json.load(open(os.path.join(state, "serve", "status.json")))
    doc["nodes"]["n001"]["boot"] = {"requests": "nope"}
    doc["nodes"]["n001"]["last boot"]["requests"].append(7)
    fsutil.atomic_write(os.path.join(state, "serve", "status.json"), json.dumps(doc))
    damaged = StatusBook(state).nodes["n001"]
    assert damaged["boot"] is None and len(damaged["last boot"]["requests"]) == 1


def test_supervisor_applies_events_of_several_workers_in_the_order_they_happened(tmp_path):
    """A node's script went out on worker 1, then its kernel on worker 0, and the supervisor reads both
    channels in one pass (it was busy): the record must still start the boot with the script."""
    import types
    from wwfast.server.supervisor import Supervisor

    sent = []
    worker = BootLedger(str(tmp_path), first_seq=1000)
    worker.apply = sent.append                      # what a worker forwards to the supervisor
    worker.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    worker.began("n1", "kernel", "kernel.zst", "10.0.0.1")
    script, kernel = sent

    class Channel:
        def __init__(self, *messages):
            self.messages = list(messages)

        def receive(self):
            out, self.messages = self.messages, []
            return out

    sup = Supervisor(types.SimpleNamespace(settings=None), 2)
    sup.ledger = BootLedger(str(tmp_path))
    sup.watcher = types.SimpleNamespace(current=Catalog.empty())
    sup.watcher.current.epoch = 0
    sup.slots[0].channel = Channel(("event", kernel))
    sup.slots[1].channel = Channel(("event", script))
    sup.drain()
    record = sup.ledger.status.record("n1")
    assert [r["stage"] for r in record["boot"]["requests"]] == ["ipxe", "kernel"], record
