"""The provisioning rules without a server: wwfast.server.provision answers parsed requests with
Reply objects (store files as open descriptors), and records what each node did in the ledger."""
import os

import pytest

from serve_helpers import make_node, publish, store_bytes
from wwfast.server.catalog import CatalogWatcher
from wwfast.server.ledger import BootLedger
from wwfast.server.provision import Provisioner
from wwfast.server.routing import ROUTES

MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
PEER = ("10.0.0.5", 40000)


@pytest.fixture
def world(tmp_path):
    state = str(tmp_path)
    manifest = publish(state, {"n001": make_node(state, "n001", MAC1, b"IMAGE" * 100),
                               "n002": make_node(state, "n002", MAC2, b"IMAGE", asset_key="sekrit"),
                               "n003": make_node(state, "n003", MAC3, b"IMAGE", address="10.0.0.5")}, "g1")
    watcher = CatalogWatcher(state)
    watcher.check()
    ledger = BootLedger(state)
    return {"state": state, "manifest": manifest, "ledger": ledger,
            "prov": Provisioner(watcher, ledger, arp=lambda ip: {"10.0.0.9": MAC1}.get(ip))}


def ask(prov, url, method="GET", peer=PEER, **headers):
    return prov.answer(method, url.encode(), {k.replace("_", "-"): v for k, v in headers.items()}, peer)


def body_of(reply):
    """The bytes a reply would send; closes its file as a transport does after the last byte."""
    if reply.file is None:
        return reply.body
    f = reply.file
    data = os.pread(f.fd, f.remaining, f.offset)
    f.sent = len(data)
    f.close(complete=True)
    return data


def want(world, node, stage, enc=None):
    encodings = world["manifest"]["nodes"][node]["artifacts"][stage]
    return store_bytes(world["state"], encodings[enc] if enc else encodings.get("zst") or encodings["raw"])


def test_every_stage_and_alias_answers_the_nodes_file(world):
    prov = world["prov"]
    for stage in ("ipxe", "kernel", "image", "system", "runtime"):
        for url in (f"/{stage}/{MAC1}", f"/{stage}?wwid=52-54-00-00-00-01", f"/provision/{MAC1}?stage={stage}"):
            reply, label = ask(prov, url)
            assert (reply.code, label, body_of(reply)) == (200, stage, want(world, "n001", stage)), url
    for alias, stage in (("container", "image"), ("overlay-system", "system"), ("overlay-runtime", "runtime")):
        reply, label = ask(prov, f"/{alias}/{MAC1}")
        assert (label, body_of(reply)) == (stage, want(world, "n001", stage))
    reply, _ = ask(prov, "/image/", peer=("10.0.0.9", 5000))          # no MAC anywhere: the ARP cache
    assert body_of(reply) == want(world, "n001", "image")
    reply, _ = ask(prov, f"/image/{MAC1}?compress=gz")
    assert body_of(reply) == want(world, "n001", "image", "gz")


def test_a_boot_is_recorded_from_script_to_runtime(world):
    prov, ledger = world["prov"], world["ledger"]
    for stage in ("ipxe", "kernel", "image", "system", "runtime"):
        body_of(ask(prov, f"/{stage}/{MAC1}")[0])
    rec = ledger.status_document(prov.catalog)["nodes"]["n001"]
    assert rec["stage"] == "runtime" and rec["ipaddr"] == "10.0.0.5"
    assert rec["boot end"] >= rec["boot start"] > 0
    assert ledger.metrics.boot.count == 1


@pytest.mark.parametrize("url,code,label", [
    ("/image/52:54:00:aa:bb:cc", 404, "image"), ("/image/not-a-mac", 400, "image"), ("/image/", 400, "image"),
    ("/image/x/y", 404, "image"), ("/nope/x", 404, "other"), ("/", 404, "other"),
    ("/provision/52:54:00:00:00:01?stage=bogus", 400, "bad"), ("/image/%2e%2e/etc", 400, "bad"),
    ("/image/52:54:00:00:00:01?compress=xz", 400, "image"), ("/status/x", 404, "other"),
])
def test_bad_requests_are_refused_with_a_reason(world, url, code, label):
    reply, got = ask(world["prov"], url)
    assert (reply.code, got) == (code, label), reply.body
    assert reply.file is None and reply.body.endswith(b"\n")


def test_methods_other_than_get_and_head(world):
    reply, _ = ask(world["prov"], f"/ipxe/{MAC1}", method="POST")
    assert reply.code == 405 and ("Allow", "GET, HEAD") in reply.headers


def test_unknown_mac_gets_the_unknown_node_script(world):
    reply, _ = ask(world["prov"], "/ipxe/52-54-00-AA-BB-CC")
    assert reply.code == 200 and b"unknown node" in body_of(reply)


def test_asset_key_and_secure_mode_refusals_show_in_status(world):
    prov, ledger = world["prov"], world["ledger"]
    assert ask(prov, f"/kernel/{MAC2}?assetkey=wrong")[0].code == 401
    assert ledger.status_document(prov.catalog)["nodes"]["n002"]["sent"] == "BAD_ASSET"
    assert body_of(ask(prov, f"/kernel/{MAC2}?assetkey=sekrit")[0]) == want(world, "n002", "kernel")
    prov.secure = True
    assert ask(prov, f"/runtime/{MAC3}", peer=("10.0.0.5", 40000))[0].code == 403
    assert ledger.status_document(prov.catalog)["nodes"]["n003"]["sent"] == "BAD_PORT"
    assert ask(prov, f"/runtime/{MAC3}", peer=("10.0.0.6", 700))[0].code == 403     # not its address
    assert body_of(ask(prov, f"/runtime/{MAC3}", peer=("10.0.0.5", 700))[0]) == want(world, "n003", "runtime")


def test_validators_and_ranges(world):
    prov = world["prov"]
    data = want(world, "n001", "image")
    etag = dict(ask(prov, f"/image/{MAC1}")[0].headers)["ETag"]
    reply, _ = ask(prov, f"/image/{MAC1}", if_none_match=etag)
    assert reply.code == 304 and reply.file is None
    reply, _ = ask(prov, f"/image/{MAC1}", range="bytes=3-9")
    assert reply.code == 206 and body_of(reply) == data[3:10]
    assert ("Content-Range", f"bytes 3-9/{len(data)}") in reply.headers
    reply, _ = ask(prov, f"/image/{MAC1}", range=f"bytes={len(data)}-")
    assert reply.code == 416
    reply, _ = ask(prov, f"/image/{MAC1}", range="bytes=3-9", if_range='"stale"')
    assert reply.code == 200 and body_of(reply) == data


def test_nothing_published_is_503(tmp_path):
    watcher = CatalogWatcher(str(tmp_path))
    watcher.check()
    prov = Provisioner(watcher, BootLedger(str(tmp_path)))
    assert ask(prov, f"/ipxe/{MAC1}")[0].code == 503
    assert ask(prov, "/healthz")[0].code == 503
    assert ask(prov, "/status")[0].code == 200


def test_service_routes_are_in_the_route_table(world):
    assert {"status", "metrics", "healthz", "provision", "ipxe", "container"} <= set(ROUTES)
    reply, label = ask(world["prov"], "/healthz")
    assert (reply.code, label, reply.body) == (200, "healthz", b"ok generation=g1\n")


def test_a_node_serve_cannot_index_is_reported_and_the_others_are_served(tmp_path):
    """Issue 11: an odd node entry (here a 19-octet hwaddr) leaves only that node out, with its reason."""
    state = str(tmp_path)
    nodes = {"n001": make_node(state, "n001", MAC1, b"IMAGE"), "n002": make_node(state, "n002", MAC2, b"IMAGE")}
    nodes["n002"]["macs"] = ["80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2"]
    publish(state, nodes, "g1")
    watcher = CatalogWatcher(state)
    assert watcher.check()
    ledger = BootLedger(state)
    prov = Provisioner(watcher, ledger)
    assert ask(prov, f"/ipxe/{MAC1}")[0].code == 200
    doc = ledger.status_document(prov.catalog)
    assert list(doc["unserved"]) == ["n002"] and "is not a MAC address" in doc["unserved"]["n002"]
    assert "wwfast_manifest_nodes_unserved 1" in ledger.metrics_text(prov.catalog)
